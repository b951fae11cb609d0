"""What the server encodes for the 0.38 sampling fields, our SDK decoder (and the official
one) reads back; the SDK's 0.38 checks catch a server that ignored the fields."""

from __future__ import annotations

import numpy as np
import pytest
from tinker.proto.response_conv import deserialize_sample_response

from tinkex_actors import types as t
from tinkex_actors.errors import ResponseDecodeError
from tinkex_actors.server.codec_json import encode_sample_json
from tinkex_actors.server.codec_proto import encode_sample
from tinkex_actors.server.engine_api import SampledSeq, SampleResult
from tinkex_actors.wire import decode_sample_response

TARGETS = np.array([[-0.5, 0.0], [-1.25, -2.0], [0.0, -3.5]], dtype=np.float32)
ALT_TOKENS = np.array([[7, 7], [9, 8], [1, 2]], dtype=np.int64)
ALT_LOGPROBS = np.array([[-0.1, -0.1], [-0.7, -1.5], [-2.0, -0.25]], dtype=np.float32)
TOPK = [[(4, -0.1), (6, -2.5)], [(5, -0.2), (9, -3.0)]]


def _result(csr: bool) -> SampleResult:
    result = SampleResult(
        sequences=[
            SampledSeq(
                tokens=[4, 5], logprobs=[-0.1, -0.2], stop_reason="length", topk_logprobs=TOPK
            ),
            SampledSeq(
                tokens=[6], logprobs=[-2.5], stop_reason="stop", topk_logprobs=[[(6, -2.5)]]
            ),
        ],
        prompt_logprobs=[None, -0.5, -1.25, -3.5],
        target_prompt_logprobs=TARGETS,
        prompt_alt_tokens=(ALT_TOKENS, ALT_LOGPROBS),
    )
    if csr:
        # Rows list cells (0), (0, 1), (1): the values the encoder must pick out.
        result.target_prompt_csr = (np.array([0, 1, 3, 4]), np.array([0, 0, 1, 1]))
    return result


def test_our_decoder_reads_what_the_server_writes() -> None:
    ours = decode_sample_response(encode_sample(_result(csr=False)))
    assert ours.sequences[0].topk_logprobs == [
        [(4, pytest.approx(-0.1)), (6, -2.5)],
        [(5, pytest.approx(-0.2)), (9, -3.0)],
    ]
    assert ours.sequences[1].topk_logprobs == [[(6, -2.5)]]
    assert ours.target_prompt_logprobs is not None
    assert ours.target_prompt_logprobs.dtype == "float32"
    assert ours.target_prompt_logprobs.dense_shape == (3, 2)
    np.testing.assert_array_equal(ours.target_prompt_logprobs.to_numpy(), TARGETS)
    assert ours.prompt_alt_tokens is not None
    np.testing.assert_array_equal(ours.prompt_alt_tokens.tokens.to_numpy(), ALT_TOKENS)
    assert ours.prompt_alt_tokens.tokens.dtype == "int64"
    np.testing.assert_array_equal(ours.prompt_alt_tokens.logprobs.to_numpy(), ALT_LOGPROBS)
    bare = SampledSeq(tokens=[6], logprobs=[-2.5], stop_reason="stop")
    plain = decode_sample_response(encode_sample(SampleResult(sequences=[bare])))
    assert plain.sequences[0].topk_logprobs is None
    assert plain.target_prompt_logprobs is None
    assert plain.prompt_alt_tokens is None


def test_sparse_targets_keep_the_request_layout() -> None:
    body = encode_sample(_result(csr=True))
    ours = decode_sample_response(body)
    target = ours.target_prompt_logprobs
    assert target is not None
    assert target.is_sparse
    assert list(target.sparse_crow_indices or ()) == [0, 1, 3, 4]
    assert list(target.sparse_col_indices or ()) == [0, 0, 1, 1]
    assert target.data == pytest.approx([-0.5, -1.25, -2.0, -3.5])
    theirs = deserialize_sample_response(body).target_prompt_logprobs
    assert theirs is not None
    assert theirs.sparse_crow_indices == [0, 1, 3, 4]
    assert theirs.data == pytest.approx([-0.5, -1.25, -2.0, -3.5])
    legacy = encode_sample_json(_result(csr=True))["target_prompt_logprobs"]
    assert legacy["sparse_col_indices"] == [0, 0, 1, 1]
    assert legacy["data"] == pytest.approx([-0.5, -1.25, -2.0, -3.5])


def test_official_decoder_agrees() -> None:
    theirs = deserialize_sample_response(encode_sample(_result(csr=False)))
    assert theirs.sequences[0].topk_logprobs == [
        [(4, pytest.approx(-0.1)), (6, -2.5)],
        [(5, pytest.approx(-0.2)), (9, -3.0)],
    ]
    assert theirs.target_prompt_logprobs is not None
    np.testing.assert_array_equal(theirs.target_prompt_logprobs.to_numpy(), TARGETS)
    assert theirs.prompt_alt_tokens is not None
    np.testing.assert_array_equal(theirs.prompt_alt_tokens.tokens.to_numpy(), ALT_TOKENS)
    legacy = encode_sample_json(_result(csr=False))
    assert legacy["sequences"][0]["topk_logprobs"][1] == [[5, -0.2], [9, -3.0]]
    assert legacy["prompt_alt_tokens"]["tokens"] == {
        "data": ALT_TOKENS.reshape(-1).tolist(),
        "dtype": "int64",
        "shape": [3, 2],
    }


def _request(**fields: object) -> t.SampleRequest:
    return t.SampleRequest(
        prompt=t.ModelInput.from_ints([1, 2, 3, 4]),
        sampling_params=t.SamplingParams(max_tokens=1),
        **fields,  # type: ignore[arg-type]
    )


def test_the_sdk_checks_that_the_fields_were_honored() -> None:
    seq = t.SampledSequence(stop_reason="length", tokens=[1])
    answered = t.SampleResponse(
        sequences=[seq],
        prompt_logprobs=[None, None, -1.0, -2.0],
        prompt_alt_tokens=t.PromptAltTokens(
            tokens=t.TensorData([1, 2, 3], "int64", [3, 1]),
            logprobs=t.TensorData([-1.0, -2.0, -3.0], "float32", [3, 1]),
        ),
    )
    request = _request(prompt_alt_tokens_k=1, prompt_logprobs=True, prompt_logprobs_last_n=2)
    assert answered.check_honors(request) is answered
    ignored_alt = t.SampleResponse(sequences=[seq])
    with pytest.raises(ResponseDecodeError, match="prompt_alt_tokens_k=1 was requested"):
        ignored_alt.check_honors(request)
    scored_all = t.SampleResponse(
        sequences=[seq],
        prompt_logprobs=[None, -0.5, -1.0, -2.0],
        prompt_alt_tokens=answered.prompt_alt_tokens,
    )
    with pytest.raises(ResponseDecodeError, match="prompt_logprobs_last_n=2"):
        scored_all.check_honors(request)
    # Nothing asked, nothing checked.
    assert ignored_alt.check_honors(_request()) is ignored_alt
