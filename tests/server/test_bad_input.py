"""Bad input: 400 with a JSON detail (413 for size), nothing written, the server keeps serving."""

from __future__ import annotations

from typing import Any

import pytest
import requests
import zstandard

from ._helpers import MODEL, PROTOBUF, Api, datum_json, fwdbwd_proto


@pytest.fixture
def model(api: Api) -> tuple[str, str]:
    session = api.session()
    return session, api.create_model(session)


def _fwdbwd(
    model_id: str, data: list[dict[str, Any]], loss: str = "cross_entropy"
) -> dict[str, Any]:
    return {
        "forward_backward_input": {"data": data, "loss_fn": loss},
        "model_id": model_id,
        "seq_id": 1,
    }


def _assert_400(reply: requests.Response, *words: str) -> None:
    assert reply.status_code == 400, (reply.status_code, reply.text)
    detail = reply.json()["detail"]
    assert detail
    for word in words:
        assert word in detail, (word, detail)


def test_malformed_bodies(api: Api) -> None:
    headers = {"Content-Type": "application/json"}
    _assert_400(api.post("/create_session", data=b'{"tags": [', headers=headers), "JSON")
    _assert_400(api.post("/forward_backward", data=b"not json", headers=headers), "JSON")
    garbage = api.post(
        "/forward_backward", data=b"\xff\xfe\x00garbage", headers={"Content-Type": PROTOBUF}
    )
    _assert_400(garbage, "protobuf")
    zstd_garbage = api.post(
        "/forward_backward",
        data=b"definitely not zstd",
        headers={"Content-Type": PROTOBUF, "Content-Encoding": "zstd"},
    )
    _assert_400(zstd_garbage, "zstd")
    _assert_400(
        api.post(
            "/create_model", {"session_id": "s", "base_model": MODEL, "lora_config": {"rank": "x"}}
        ),
        "rank",
    )


def test_training_input_errors_name_the_field(api: Api, model: tuple[str, str]) -> None:
    _, model_id = model
    cases = [
        (_fwdbwd(model_id, [datum_json([1, 2, 3], [2, 3, 4], [1.0, 1.0])]), "weights", "length 2"),
        (_fwdbwd(model_id, [datum_json([1, 2, 99999], [2, 3, 4])]), "model_input", "99999"),
        (_fwdbwd(model_id, [datum_json([1, 2, 3], [2, 3, -1])]), "target_tokens", "-1"),
        (
            _fwdbwd(model_id, [datum_json([1, 2], [2, 3])], loss="no_such_loss"),
            "loss_fn",
            "no_such_loss",
        ),
        (_fwdbwd(model_id, [datum_json([1, 2], [2, 3])], loss="ppo"), "logprobs", "ppo"),
        (_fwdbwd(model_id, []), "data"),
        (
            _fwdbwd(
                model_id,
                [{"model_input": {"chunks": [{"type": "image", "data": "", "format": "png"}]}}],
            ),
            "image",
        ),
    ]
    for body, *words in cases:
        _assert_400(api.post("/forward_backward", body), *words)
    proto = fwdbwd_proto(model_id, 1, [([1, 2, 3], [2, 3, 4], [1.0, 1.0])])
    _assert_400(api.fwdbwd_proto(model_id, 1, proto), "weights")
    # Nothing consumed seq_id 1: a valid request with it runs (and is the model's first step).
    out = api.fwdbwd(model_id, 1, [datum_json([1, 2, 3], [2, 3, 4])])
    assert out["metrics"]["loss:sum"] > 0


def test_unknown_ids_are_404(api: Api, model: tuple[str, str]) -> None:
    session, _ = model
    assert (
        api.post(
            "/forward_backward", _fwdbwd("session-x:train:0", [datum_json([1], [2])])
        ).status_code
        == 404
    )
    assert api.post("/optim_step", {"model_id": "nope"}).status_code == 404
    assert api.post("/get_info", {"model_id": "nope"}).status_code == 404
    assert api.get("/samplers/nope").status_code == 404
    assert api.get("/training_runs/nope").status_code == 404
    assert api.get("/sessions/nope").status_code == 404
    unknown_path = api.post("/weights_info", {"tinker_path": "tinker://nope/weights/x"})
    assert unknown_path.status_code == 404
    body = {
        "session_id": session,
        "sampling_session_seq_id": 7,
        "model_path": "tinker://nope/sampler_weights/x",
    }
    assert api.post("/create_sampling_session", body).status_code == 404


def test_create_and_sampling_errors(api: Api, model: tuple[str, str]) -> None:
    session, _ = model
    runs_before = api.get("/training_runs", params={"limit": 1000}).json()["cursor"]["total_count"]
    _assert_400(
        api.post(
            "/create_model",
            {"session_id": session, "model_seq_id": 50, "base_model": "no/such-model"},
        ),
        "no/such-model",
    )
    _assert_400(
        api.post(
            "/create_model",
            {
                "session_id": session,
                "model_seq_id": 51,
                "base_model": MODEL,
                "lora_config": {"rank": 0},
            },
        ),
        "rank",
    )
    runs_after = api.get("/training_runs", params={"limit": 1000}).json()["cursor"]["total_count"]
    assert runs_after == runs_before

    def sample(**params: Any) -> requests.Response:
        body: dict[str, Any] = {
            "base_model": MODEL,
            "prompt": {
                "chunks": [{"type": "encoded_text", "tokens": params.pop("prompt", [1, 2])}]
            },
            "sampling_params": {"max_tokens": 3, **params.pop("sampling", {})},
            **params,
        }
        return api.post("/asample", body)

    _assert_400(sample(sampling={"max_tokens": 0}), "max_tokens")
    _assert_400(sample(sampling={"max_tokens": None}), "max_tokens")
    _assert_400(sample(prompt=[1, 10**7]), "prompt", "vocabulary")
    _assert_400(sample(prompt=[]), "prompt")
    _assert_400(sample(num_samples=0), "num_samples")
    _assert_400(sample(sampling={"top_p": 0}), "top_p")
    _assert_400(sample(sampling={"temperature": -1}), "temperature")
    _assert_400(sample(sampling={"stop": ["a", 1]}), "stop")
    _assert_400(sample(topk_sample_logprobs=-1), "topk_sample_logprobs")


def test_paths_names_and_ttls(api: Api, model: tuple[str, str]) -> None:
    session, model_id = model
    for bad in (
        "weights/x",
        "tinker://run/other/x",
        "tinker://run/weights",
        "tinker://run/weights/a/b",
    ):
        reply = api.post("/weights_info", {"tinker_path": bad})
        _assert_400(reply, "tinker://<run_id>/<weights|sampler_weights|external_weights>/<name>")
    reply = api.post(
        "/create_sampling_session",
        {"session_id": session, "sampling_session_seq_id": 3, "model_path": "s3://x"},
    )
    _assert_400(reply, "model_path")
    _assert_400(
        api.post("/save_weights", {"model_id": model_id, "path": "a/b", "seq_id": 1}), "name"
    )
    _assert_400(
        api.post(
            "/save_weights", {"model_id": model_id, "path": "ok", "seq_id": 1, "ttl_seconds": 0}
        ),
        "ttl_seconds",
    )
    _assert_400(api.request("DELETE", "/training_runs/r/checkpoints/bogus"), "checkpoint id")
    assert api.get("/checkpoints", params={"limit": 0}).status_code == 400
    # Nothing was saved by any of that.
    assert api.get(f"/training_runs/{model_id}/checkpoints").json()["checkpoints"] == []


def test_oversized_bodies_are_413(api: Api, model: tuple[str, str]) -> None:
    _, model_id = model
    big = b"x" * (4 * 1024 * 1024 + 1)
    reply = api.post("/forward_backward", data=big, headers={"Content-Type": PROTOBUF})
    assert reply.status_code == 413
    assert "exceeds" in reply.json()["detail"]
    bomb = zstandard.ZstdCompressor().compress(b"\0" * (70 * 1024 * 1024))
    reply = api.post(
        "/forward_backward",
        data=bomb,
        headers={"Content-Type": PROTOBUF, "Content-Encoding": "zstd"},
    )
    assert reply.status_code == 413
    # Still serving.
    assert api.fwdbwd(model_id, 1, [datum_json([1, 2], [2, 3])])["metrics"]["loss:sum"] > 0
