"""The 0.38 sampling fields end to end: the official SDK asks the null and the torch server
for top-k sampled logprobs, target prompt logprobs (dense and sparse), alternative prompt
tokens and the last-n prompt logprobs, and checks that the numbers hang together."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tinker
from _servers import ServerHandle
from tinker import types

from ._helpers import MODEL, Api
from ._sdk import service_client

PROMPT = [403, 293, 267, 926, 262, 1502, 16, 44, 9]
N = len(PROMPT)
K = 4


def _targets() -> tuple[np.ndarray, types.TensorData]:
    """Dense target ids ``[N - 1, 3]``: the true next token, a fixed id, and -1 / 7."""
    ids = np.empty((N - 1, 3), dtype=np.int64)
    ids[:, 0] = PROMPT[1:]
    ids[:, 1] = 5
    ids[:, 2] = [-1 if i % 2 else 7 for i in range(N - 1)]
    return ids, types.TensorData.from_numpy(ids)


def _check_sample(sampler: tinker.SamplingClient, *, greedy: bool) -> None:
    ids, dense = _targets()
    params = types.SamplingParams(
        max_tokens=6, temperature=0.0 if greedy else 0.8, seed=11, stop=[]
    )
    out = sampler.sample(
        types.ModelInput.from_ints(PROMPT),
        2,
        params,
        include_prompt_logprobs=True,
        topk_prompt_logprobs=3,
        topk_sample_logprobs=K,
        target_prompt_logprobs=dense,
        prompt_alt_tokens_k=5,
    ).result()
    prompt_lp = np.array(out.prompt_logprobs[1:], dtype=np.float64)
    assert out.prompt_logprobs[0] is None

    # Top-k logprobs of every generated token, best first; they hold the sampled token.
    for seq in out.sequences:
        assert seq.topk_logprobs is not None
        assert len(seq.topk_logprobs) == len(seq.tokens) == 6
        for token, logprob, row in zip(seq.tokens, seq.logprobs, seq.topk_logprobs, strict=True):
            assert row is not None
            assert len(row) == K
            values = [lp for _, lp in row]
            assert values == sorted(values, reverse=True)
            assert all(lp <= 0 for lp in values)
            found = dict(row).get(token)
            if greedy:
                assert row[0][0] == token
            if found is not None:
                assert found == pytest.approx(logprob, abs=1e-4)
            else:
                assert logprob <= values[-1] + 1e-4  # not in the top k: no likelier than them

    # Target logprobs: the request's shape, the prompt logprob for the true next token.
    target = out.target_prompt_logprobs
    assert target is not None
    assert target.dtype == "float32"
    assert target.shape == [N - 1, 3]
    values = target.to_numpy()
    np.testing.assert_allclose(values[:, 0], prompt_lp, rtol=1e-4, atol=1e-5)
    assert np.all(values[:, 1] < 0)
    assert np.all(values[ids[:, 2] == -1, 2] == 0.0)
    assert np.all(values[ids[:, 2] == 7, 2] < 0)

    # Alternatives at every prompt position after the first, with their logprobs.
    alt = out.prompt_alt_tokens
    assert alt is not None
    tokens, logprobs = alt.tokens.to_numpy(), alt.logprobs.to_numpy()
    assert tokens.shape == logprobs.shape == (N - 1, 5)
    assert tokens.dtype == np.int64
    assert np.all(logprobs <= 0)
    if greedy:
        # Temperature 0: every draw is the best token, whose logprob tops the top-k list.
        best = [row[0] for row in out.topk_prompt_logprobs[1:]]
        assert tokens.tolist() == [[token] * 5 for token, _ in best]
        np.testing.assert_allclose(logprobs[:, 0], [lp for _, lp in best], atol=1e-4)
    # Draws hitting the true next token carry its prompt logprob.
    hits = tokens == np.asarray(PROMPT[1:])[:, None]
    np.testing.assert_allclose(
        logprobs[hits], np.broadcast_to(prompt_lp[:, None], hits.shape)[hits], atol=1e-4
    )

    # The same request without the extras samples the same tokens (own random streams).
    plain = sampler.sample(types.ModelInput.from_ints(PROMPT), 2, params).result()
    assert [s.tokens for s in plain.sequences] == [s.tokens for s in out.sequences]
    assert plain.sequences[0].topk_logprobs is None
    assert plain.target_prompt_logprobs is None
    assert plain.prompt_alt_tokens is None


def _check_sparse_and_last_n(sampler: tinker.SamplingClient) -> None:
    # Sparse request: row i lists the true next token only on even rows (pad -1 elsewhere).
    rows = [i for i in range(N - 1) if i % 2 == 0]
    crow = [0]
    for i in range(N - 1):
        crow.append(crow[-1] + (1 if i % 2 == 0 else 0))
    sparse = types.TensorData(
        data=[PROMPT[i + 1] for i in rows],
        dtype="int64",
        shape=[N - 1, 2],
        sparse_crow_indices=crow,
        sparse_col_indices=[1] * len(rows),
    )
    out = sampler.sample(
        types.ModelInput.from_ints(PROMPT),
        1,
        types.SamplingParams(max_tokens=1, temperature=0.0),
        include_prompt_logprobs=True,
        topk_prompt_logprobs=2,
        target_prompt_logprobs=sparse,
        prompt_logprobs_last_n=3,
    ).result()
    target = out.target_prompt_logprobs
    assert target is not None
    assert target.sparse_crow_indices == crow
    assert target.sparse_col_indices == [1] * len(rows)
    assert target.shape == [N - 1, 2]
    # last_n: only the last three prompt tokens are scored (the target tensor is not cut).
    assert out.prompt_logprobs[: N - 3] == [None] * (N - 3)
    assert all(v is not None for v in out.prompt_logprobs[N - 3 :])
    assert out.topk_prompt_logprobs[: N - 3] == [None] * (N - 3)
    full = sampler.sample(
        types.ModelInput.from_ints(PROMPT),
        1,
        types.SamplingParams(max_tokens=1, temperature=0.0),
        include_prompt_logprobs=True,
    ).result()
    np.testing.assert_allclose(
        np.asarray(target.data, dtype=np.float64),
        [full.prompt_logprobs[i + 1] for i in rows],
        rtol=1e-4,
    )


@pytest.mark.parametrize("greedy", [True, False])
def test_null_server(null_server: ServerHandle, greedy: bool) -> None:
    with service_client(null_server) as service:
        sampler = service.create_sampling_client(base_model=MODEL).result()
        _check_sample(sampler, greedy=greedy)
        _check_sparse_and_last_n(sampler)


@pytest.mark.torch
def test_torch_server(torch_server: ServerHandle) -> None:
    with service_client(torch_server) as service:
        sampler = service.create_sampling_client(base_model=MODEL).result()
        _check_sample(sampler, greedy=True)
        _check_sample(sampler, greedy=False)
        _check_sparse_and_last_n(sampler)


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"topk_sample_logprobs": 10**6}, ["topk_sample_logprobs"]),
        ({"prompt_alt_tokens_k": -1}, ["prompt_alt_tokens_k"]),
        ({"prompt_alt_tokens_k": 10**5}, ["prompt_alt_tokens_k"]),
        ({"prompt": [5], "prompt_alt_tokens_k": 2}, ["prompt_alt_tokens_k", "2 tokens"]),
        (
            {"target_prompt_logprobs": {"data": [1.0] * 3, "dtype": "float32", "shape": [3, 1]}},
            ["target_prompt_logprobs.dtype", "int64"],
        ),
        (
            {"target_prompt_logprobs": {"data": [1, 2], "dtype": "int64", "shape": [2, 1]}},
            ["target_prompt_logprobs.shape", "[3, K]"],
        ),
        (
            {"target_prompt_logprobs": {"data": [1, 2, 3], "dtype": "int64"}},
            ["target_prompt_logprobs.shape"],
        ),
        (
            {"target_prompt_logprobs": {"data": [1, 10**7, -1], "dtype": "int64", "shape": [3, 1]}},
            ["target_prompt_logprobs", "10000000"],
        ),
        (
            {"target_prompt_logprobs": {"data": [1, -2, 3], "dtype": "int64", "shape": [3, 1]}},
            ["target_prompt_logprobs", "-2"],
        ),
        (
            {
                "target_prompt_logprobs": {
                    "data": [1, 2],
                    "dtype": "int64",
                    "shape": [3, 2],
                    "sparse_crow_indices": [0, 1, 2],
                    "sparse_col_indices": [0, 5],
                }
            },
            ["target_prompt_logprobs", "CSR"],
        ),
    ],
)
def test_bad_sampling_fields_are_named_400s(
    api: Api, fields: dict[str, Any], words: list[str]
) -> None:
    body: dict[str, Any] = {
        "base_model": MODEL,
        "prompt": {
            "chunks": [{"type": "encoded_text", "tokens": fields.pop("prompt", [1, 2, 3, 4])}]
        },
        "sampling_params": {"max_tokens": 2},
        "record_stability_info": True,
        **fields,
    }
    reply = api.post("/asample", body)
    assert reply.status_code == 400, reply.text
    for word in words:
        assert word in reply.json()["detail"], (word, reply.json())
    # record_stability_info alone is accepted.
    del body["record_stability_info"]
    body.update(dict.fromkeys(("topk_sample_logprobs", "prompt_alt_tokens_k"), 0))
    body.pop("target_prompt_logprobs", None)
    body["prompt"]["chunks"][0]["tokens"] = [1, 2, 3, 4]
    assert api.post("/asample", {**body, "record_stability_info": True}).status_code == 200
