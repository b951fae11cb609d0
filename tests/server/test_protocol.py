"""The wire protocol over plain HTTP against the shared null server (protocol §3, §8)."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
import requests
from _servers import ServerHandle
from tinker.proto import tinker_public_pb2 as upstream_pb

from ._helpers import MODEL, PROTOBUF, Api, datum_json, fwdbwd_proto

DATA = [datum_json([1, 2, 3, 4], [2, 3, 4, 5], [1.0, 1.0, 1.0, 1.0])]


def test_healthz_is_open_everything_else_needs_a_key(null_server: ServerHandle) -> None:
    base = f"{null_server.base_url}/api/v1"
    health = requests.get(f"{base}/healthz", timeout=10)
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    calls = [
        ("POST", "/client/config"),
        ("POST", "/create_session"),
        ("POST", "/retrieve_future"),
        ("POST", "/forward_backward"),
        ("POST", "/asample"),
        ("POST", "/telemetry"),
        ("GET", "/sessions"),
        ("GET", "/training_runs"),
        ("GET", "/checkpoints"),
        ("GET", "/samplers/x"),
        ("GET", "/get_server_capabilities"),
        ("DELETE", "/training_runs/r/checkpoints/weights/x"),
    ]
    for method, path in calls:
        for headers in ({}, {"X-API-Key": "tml-not-a-valid-key"}):
            reply = requests.request(method, f"{base}{path}", headers=headers, json={}, timeout=10)
            assert reply.status_code == 401, (method, path, reply.text)
            assert "API key" in reply.json()["detail"]


def test_config_capabilities_and_telemetry(api: Api) -> None:
    config = api.ok("/client/config", {"sdk_version": "0.38.0"})
    assert config == {
        "fwdbwd_max_chunk_len": 2,
        "proto_compress_fwdbwd": True,
        "sample_use_retrieve_futures": True,  # the default: retrieve_futures is served
    }
    assert api.ok("/client/dynamic_config", {"sdk_version": "0.38.0"}) == {}
    assert api.ok("/telemetry", {"events": []}) == {"status": "accepted"}
    capabilities = api.get("/get_server_capabilities").json()
    assert capabilities["supported_models"][0]["model_name"] == MODEL


def test_heartbeat_and_finish(api: Api) -> None:
    session = api.session()
    model = api.create_model(session)
    assert api.post("/session_heartbeat", {"session_id": session}).status_code == 200
    assert api.post("/session_heartbeat", {"session_id": "session-nope"}).status_code == 404
    assert (
        api.post(f"/sessions/{session}/finish", {"reason": {"type": "success"}}).status_code == 204
    )
    gone = api.post("/session_heartbeat", {"session_id": session})
    assert gone.status_code == 410
    # The finished session's adapter is released; its training run stays.
    deadline = time.monotonic() + 10
    while api.post("/get_info", {"model_id": model}).status_code == 200:
        reply = api.post("/optim_step", {"model_id": model, "seq_id": 1})
        if reply.status_code == 404:
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert (
        "not loaded" in api.post("/optim_step", {"model_id": model, "seq_id": 2}).json()["detail"]
    )
    assert api.get(f"/training_runs/{model}").status_code == 200


def test_json_training_flow_like_pre_025_clients(api: Api) -> None:
    session = api.session()
    model = api.create_model(session)
    info = api.ok("/get_info", {"model_id": model})
    assert info["model_data"]["model_name"] == MODEL
    assert info["model_data"]["tokenizer_id"] == MODEL
    assert info["is_lora"] is True
    assert info["lora_rank"] == 4
    losses = []
    seq = 0
    for _ in range(5):
        seq += 1
        out = api.fwdbwd(model, seq, DATA)
        losses.append(out["metrics"]["loss:sum"])
        assert out["loss_fn_outputs"][0]["logprobs"]["shape"] == [4]
        seq += 1
        assert "metrics" in api.optim(model, seq, lr=1e-3)
    assert all(b < a for a, b in itertools.pairwise(losses)), losses
    seq += 1
    forward = api.fwdbwd(model, seq, DATA, forward_only=True)
    assert forward["loss_fn_output_type"] == "ArrayRecord"
    assert len(forward["loss_fn_outputs"][0]["logprobs"]["data"]) == 4
    seq += 1
    path = api.save(model, seq, "json-flow", sampler=True)
    assert path == f"tinker://{model}/sampler_weights/json-flow"
    sampler = api.ok(
        "/create_sampling_session",
        {"session_id": session, "sampling_session_seq_id": 0, "model_path": path},
    )["sampling_session_id"]
    assert sampler == f"{session}:sample:0"
    assert api.get(f"/samplers/{sampler}").json() == {
        "sampler_id": sampler,
        "base_model": MODEL,
        "model_path": path,
    }
    future = api.ok(
        "/asample",
        {
            "sampling_session_id": sampler,
            "seq_id": 0,
            "num_samples": 3,
            "prompt": {"chunks": [{"type": "encoded_text", "tokens": [5, 6, 7]}]},
            "sampling_params": {"max_tokens": 4, "seed": 11, "temperature": 0.8},
            "prompt_logprobs": True,
        },
    )
    assert isinstance(future["request_id"], str)
    assert len(future["sample_sequence_ids"]) == 3
    sample = api.result(future)
    assert [len(s["tokens"]) for s in sample["sequences"]] == [4, 4, 4]
    assert sample["prompt_logprobs"][0] is None
    assert len(sample["prompt_logprobs"]) == 3


def test_protobuf_forward_backward_plain_and_zstd(api: Api) -> None:
    session = api.session()
    model = api.create_model(session)
    data = [([1, 2, 3], [2, 3, 4], [1.0, 0.5, 0.0]), ([7, 8], [8, 9], [1.0, 1.0])]
    answers = []
    for seq, zstd in ((1, False), (2, True)):
        reply = api.fwdbwd_proto(
            model, seq, fwdbwd_proto(model, seq, data, forward_only=True), zstd=zstd
        )
        assert reply.status_code == 200, reply.text
        proto = api.poll(reply.json()["request_id"], proto=True)
        assert proto.headers["content-type"].startswith(PROTOBUF)
        output = upstream_pb.ForwardBackwardOutput()
        output.ParseFromString(proto.content)
        record = output.loss_fn_outputs[0]
        assert record.num_datums == 2
        offsets = np.frombuffer(record.fields["logprobs"].offsets, dtype="<i8")
        assert offsets.tolist() == [0, 12, 20]  # float32 per target token
        answers.append(dict(output.metrics))
        # The same future, asked for JSON, answers the legacy shape.
        legacy = api.poll(reply.json()["request_id"]).json()
        assert [o["logprobs"]["shape"] for o in legacy["loss_fn_outputs"]] == [[3], [2]]
    assert answers[0] == answers[1]
    assert set(answers[0]) == {"loss:sum"}


def test_retrieve_future_try_again_then_result_in_seq_order(api: Api) -> None:
    session = api.session()
    model = api.create_model(session)
    # seq 2 arrives before seq 1: it must wait (try_again), then run after it.
    later = api.ok(
        "/forward",
        {
            "forward_input": {"data": DATA, "loss_fn": "cross_entropy"},
            "model_id": model,
            "seq_id": 3,
        },
    )
    step = api.ok(
        "/optim_step", {"model_id": model, "seq_id": 2, "adam_params": {"learning_rate": 0.01}}
    )
    started = time.monotonic()
    waiting = api.post("/retrieve_future", {"request_id": later["request_id"]})
    assert waiting.json() == {
        "type": "try_again",
        "request_id": later["request_id"],
        "queue_state": "active",
    }
    assert time.monotonic() - started >= 1.5  # held for --poll-hold-seconds=2
    first = api.ok(
        "/forward_backward",
        {
            "forward_backward_input": {"data": DATA, "loss_fn": "cross_entropy"},
            "model_id": model,
            "seq_id": 1,
        },
    )
    before = api.result(first)["metrics"]["loss:sum"]
    api.result(step)
    after = api.result(later)["metrics"]["loss:sum"]
    assert after < before  # the forward (seq 3) saw the step (seq 2)


def test_retrieve_future_unknown_foreign_and_malformed(api: Api, other_api: Api) -> None:
    missing = api.post("/retrieve_future", {"request_id": "nope-1"})
    assert missing.status_code == 404
    assert "unknown future" in missing.json()["detail"]
    session = api.session()
    future = api.ok(
        "/create_model",
        {"session_id": session, "model_seq_id": 0, "base_model": MODEL, "lora_config": {"rank": 2}},
    )
    assert (
        other_api.post("/retrieve_future", {"request_id": future["request_id"]}).status_code == 404
    )
    assert api.post("/retrieve_future", {"request_id": 5}).status_code == 400
    assert (
        api.post(
            "/retrieve_future", data=b"{", headers={"Content-Type": "application/json"}
        ).status_code
        == 400
    )


def test_failed_request_reports_category(api: Api) -> None:
    session = api.session()
    model = api.create_model(session)
    root = api.server.data_dir / "checkpoints"
    before = set(root.iterdir())
    path = api.save(model, 1, "to-be-broken")
    (new_dir,) = set(root.iterdir()) - before
    # Queue a load behind a gap, break the checkpoint, then fill the gap.
    load = api.ok(
        "/load_weights", {"model_id": model, "seq_id": 3, "path": path, "optimizer": True}
    )
    (new_dir / "optimizer.safetensors").write_bytes(b"garbage")
    api.optim(model, 2)
    body = api.poll(load["request_id"]).json()
    assert body["category"] == "user"
    assert "optimizer" in body["error"]


def test_idempotency_key_replays_the_first_future(api: Api) -> None:
    session = api.session()
    models = [api.create_model(session, seq=i, seed=3) for i in range(2)]
    for model in models:
        api.fwdbwd(model, 1, DATA)
    key = {"X-Idempotency-Key": "stainless-python-retry-test-1"}
    body = {"model_id": models[0], "seq_id": 2, "adam_params": {"learning_rate": 0.01}}
    first = api.ok("/optim_step", body, headers=key)
    again = api.ok("/optim_step", body, headers=key)
    assert again["request_id"] == first["request_id"]
    different = api.post("/optim_step", {**body, "seq_id": 3}, headers=key)
    assert different.status_code == 409
    api.result(first)
    api.optim(models[1], 2, lr=0.01)
    # The step ran once: both models (same seed, same history) score the same.
    scores = [api.fwdbwd(m, 3, DATA, forward_only=True)["metrics"]["loss:sum"] for m in models]
    assert scores[0] == scores[1]


def test_seq_id_dedupe_same_payload_same_future_other_payload_409(api: Api) -> None:
    session = api.session()
    model = api.create_model(session)
    body = {"model_id": model, "seq_id": 1, "adam_params": {"learning_rate": 0.001}}
    first = api.ok("/optim_step", body)
    assert api.ok("/optim_step", body)["request_id"] == first["request_id"]
    clash = api.post("/optim_step", {**body, "adam_params": {"learning_rate": 0.5}})
    assert clash.status_code == 409
    assert "seq_id 1" in clash.json()["detail"]
    assert "metrics" in api.result(first)


@pytest.mark.parametrize("accept_proto", [True, False])
def test_sample_results_follow_accept(api: Api, accept_proto: bool) -> None:
    body = {
        "base_model": MODEL,
        "num_samples": 2,
        "prompt": {"chunks": [{"type": "encoded_text", "tokens": [1, 2, 3]}]},
        "sampling_params": {"max_tokens": 3, "seed": 5},
        "prompt_logprobs": True,
        "topk_prompt_logprobs": 2,
    }
    future = api.ok("/asample", body)
    reply = api.poll(future["request_id"], proto=accept_proto)
    if accept_proto:
        sample = upstream_pb.SampleResponse()
        sample.ParseFromString(reply.content)
        assert len(sample.sequences) == 2
        prompt = np.frombuffer(sample.prompt_logprobs, dtype="<f4")
        assert np.isnan(prompt[0])
        assert np.isfinite(prompt[1:]).all()
        assert sample.topk_prompt_logprobs.k == 2
        assert sample.topk_prompt_logprobs.length == 3
    else:
        sample_json = reply.json()
        assert len(sample_json["sequences"]) == 2
        assert sample_json["topk_prompt_logprobs"][0] is None
        assert len(sample_json["topk_prompt_logprobs"][1]) == 2


def test_unload_model_after_queued_work(api: Api) -> None:
    session = api.session()
    model = api.create_model(session)
    step = api.ok("/optim_step", {"model_id": model, "seq_id": 1})
    unload = api.ok("/unload_model", {"model_id": model, "type": "unload_model"})
    assert api.result(unload) == {"model_id": model, "type": "unload_model"}
    assert "metrics" in api.result(step)  # queued before the unload: it ran
    gone = api.post("/optim_step", {"model_id": model, "seq_id": 2})
    assert gone.status_code == 404
    assert "not loaded" in gone.json()["detail"]
    info = api.ok("/get_info", {"model_id": model})  # the run is still on record
    assert info["model_data"]["model_name"] == MODEL
