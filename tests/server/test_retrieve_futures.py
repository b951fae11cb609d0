"""``POST /api/v1/retrieve_futures`` over HTTP, and the official SDK 0.38 polling with it.

The plain-HTTP tests use the shared null server (``--poll-hold-seconds=2``). The SDK tests
run on two servers of their own with ``--debug-stats``: one announcing
``sample_use_retrieve_futures`` (the default) and one with it turned off.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from _servers import ServerHandle, session_server
from tinker import types

from tinkex_actors._constants import SAMPLE_SEQ_ID_STRIDE

from ._helpers import MODEL, PROTOBUF, Api
from ._sdk import service_client

DEBUG_STATS = "/_debug/stats"
SDK_SAMPLES = 200


# ------------------------------------------------------------------------------ helpers
def _sampler(api: Api) -> tuple[str, str]:
    """A new session and a sampling session on the base model: (session_id, sampler_id)."""
    session = api.session()
    reply = api.ok(
        "/create_sampling_session",
        {"session_id": session, "sampling_session_seq_id": 0, "base_model": MODEL},
    )
    return session, str(reply["sampling_session_id"])


def _sample_body(index: int, **where: Any) -> dict[str, Any]:
    return {
        "prompt": {"chunks": [{"type": "encoded_text", "tokens": [3 + index % 2000, 7, 11]}]},
        "sampling_params": {"max_tokens": 6, "seed": index},
        "num_samples": 1,
        **where,
    }


def _asample(api: Api, sampler_id: str, seq_id: int) -> str:
    body = _sample_body(seq_id, sampling_session_id=sampler_id, seq_id=seq_id)
    return str(api.ok("/asample", body)["request_id"])


def _poll(
    api: Api,
    sampler_id: str,
    cursor: int = 0,
    *,
    clone: int = 0,
    timeout: float | None = None,
    acks: tuple[str, ...] = (),
) -> requests.Response:
    body: dict[str, Any] = {
        "target": {
            "type": "sampling_session",
            "sampling_session_id": sampler_id,
            "cloned_sampler_id": clone,
        },
        "prev_cursor": cursor,
        "retrieved_request_ids": list(acks),
    }
    if timeout is not None:
        body["timeout"] = timeout
    return api.post("/retrieve_futures", body)


def _collect(
    api: Api, sampler_id: str, want: int, *, clone: int = 0
) -> tuple[list[dict[str, Any]], int]:
    """Poll from cursor 0 until ``want`` completions came; (completions in order, cursor)."""
    completions: list[dict[str, Any]] = []
    cursor = 0
    deadline = time.monotonic() + 60
    while len(completions) < want:
        assert time.monotonic() < deadline, completions
        reply = _poll(api, sampler_id, cursor, clone=clone)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert set(body) == {"completions", "cursor"}
        if body["completions"]:
            assert body["cursor"] > cursor  # the cursor moves past what it reported
        else:
            assert body["cursor"] == cursor
        completions += body["completions"]
        cursor = body["cursor"]
    return completions, cursor


# ------------------------------------------------------------------------------ plain HTTP
def test_each_completion_is_reported_once_in_order_then_acknowledged(api: Api) -> None:
    _, sampler_id = _sampler(api)
    ids = [_asample(api, sampler_id, seq) for seq in range(30)]
    clone_ids = [_asample(api, sampler_id, 3 * SAMPLE_SEQ_ID_STRIDE + seq) for seq in range(3)]

    completions, cursor = _collect(api, sampler_id, len(ids))
    reported = [c["request_id"] for c in completions]
    assert sorted(reported) == sorted(ids)  # each exactly once, no clone's among them
    assert all(c["state"] == "finished" for c in completions)
    # The announced size is the protobuf payload retrieve_future then answers.
    for completion in completions[:5]:
        payload = api.poll(completion["request_id"], proto=True)
        assert payload.headers["content-type"].startswith(PROTOBUF)
        assert completion["response_payload_uncompressed_size"] == len(payload.content)

    clone_completions, _ = _collect(api, sampler_id, 3, clone=3)
    assert sorted(c["request_id"] for c in clone_completions) == sorted(clone_ids)

    # Nothing new past the cursor: timeout 0 answers at once, empty, with the same cursor;
    # what the cursor covered is trimmed, so even a poll from 0 has nothing left.
    for prev in (cursor, 0):
        reply = _poll(api, sampler_id, prev, timeout=0)
        assert reply.status_code == 200
        assert reply.json() == {"completions": [], "cursor": prev}

    # Acknowledged futures are dropped: their payloads are gone (404), others stay.
    reply = _poll(api, sampler_id, cursor, timeout=0, acks=tuple(ids[:10]))
    assert reply.status_code == 200
    gone = api.post("/retrieve_future", {"request_id": ids[0]})
    assert gone.status_code == 404
    assert "unknown future" in gone.json()["detail"]
    assert api.post("/retrieve_future", {"request_id": ids[10]}).status_code == 200

    ahead = _poll(api, sampler_id, cursor + 10**9, timeout=0)
    assert ahead.status_code == 400
    assert "prev_cursor" in ahead.json()["detail"]


def test_a_waiting_poll_wakes_up_on_the_first_completion(api: Api) -> None:
    _, sampler_id = _sampler(api)
    reply = _poll(api, sampler_id, timeout=0)
    assert reply.json() == {"completions": [], "cursor": 0}

    poller = Api(api.server)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(_poll, poller, sampler_id)
        time.sleep(0.5)  # the poll is held (hold: 2 s)
        assert not waiting.done()
        request_id = _asample(api, sampler_id, 0)
        answer = waiting.result(timeout=30)
    poller.close()
    assert answer.status_code == 200
    body = answer.json()
    # Answered because of the completion (a timed-out hold would have answered empty).
    assert [c["request_id"] for c in body["completions"]] == [request_id]
    assert body["cursor"] > 0


def test_unknown_foreign_and_finished_sampling_sessions(api: Api, other_api: Api) -> None:
    session, sampler_id = _sampler(api)
    unknown = _poll(api, f"{session}:sample:99", timeout=0)
    assert unknown.status_code == 404
    assert "unknown sampling session" in unknown.json()["detail"]
    foreign = _poll(other_api, sampler_id, timeout=0)
    assert foreign.status_code == 404

    poller = Api(api.server)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(_poll, poller, sampler_id)
        time.sleep(0.3)  # the poll is held (hold: 2 s), then the session finishes
        finish = api.post(f"/sessions/{session}/finish", {"reason": {"type": "success"}})
        assert finish.status_code == 204
        released = waiting.result(timeout=30)
    poller.close()
    assert released.status_code == 410
    after = _poll(api, sampler_id, timeout=0)
    assert after.status_code == 410
    assert "finished" in after.json()["detail"]


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ({}, "target"),
        ({"target": {"sampling_session_id": 5}}, "sampling_session_id"),
        ({"target": {"type": "model", "sampling_session_id": "s"}}, "type"),
        ({"target": {"sampling_session_id": "s", "cloned_sampler_id": -1}}, "cloned_sampler_id"),
        ({"target": {"sampling_session_id": "s"}, "prev_cursor": -3}, "prev_cursor"),
        ({"target": {"sampling_session_id": "s"}, "timeout": -1}, "timeout"),
        ({"target": {"sampling_session_id": "s"}, "retrieved_request_ids": [1]}, "retrieved"),
    ],
)
def test_bad_polls_get_400_naming_the_field(api: Api, body: dict[str, Any], names: str) -> None:
    reply = api.post("/retrieve_futures", body)
    assert reply.status_code == 400, reply.text
    assert names in reply.json()["detail"]


def test_malformed_json_and_wrong_method(api: Api) -> None:
    reply = api.post(
        "/retrieve_futures", data=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert reply.status_code == 400
    assert reply.json()["detail"]
    assert api.get("/retrieve_futures").status_code == 405


def test_failed_requests_are_reported_failed_and_their_error_fetched() -> None:
    # A sampler built from saved weights is rebuilt after a restart on its first request; with
    # its weights file corrupted meanwhile, that request fails in the engine.
    with session_server("null") as server:
        api = Api(server)
        try:
            session = api.session()
            model = api.create_model(session)
            path = api.save(model, 1, "w", sampler=True)
            sampler_id = api.ok(
                "/create_sampling_session",
                {"session_id": session, "sampling_session_seq_id": 0, "model_path": path},
            )["sampling_session_id"]
            server.restart()
            weights = list(server.data_dir.rglob("adapter_model.safetensors"))
            assert weights
            for file in weights:
                file.write_bytes(b"not safetensors")
            request_id = _asample(api, sampler_id, 0)
            completions, _ = _collect(api, sampler_id, 1)
            assert completions == [{"state": "failed", "request_id": request_id}]
            error = api.post("/retrieve_future", {"request_id": request_id}).json()
            assert error["category"] == "user"
            assert "unreadable" in error["error"]
        finally:
            api.close()


# ------------------------------------------------------------------------------ official SDK
@pytest.fixture(scope="module")
def batched_server() -> Iterator[ServerHandle]:
    """Announces sample_use_retrieve_futures (the default)."""
    with session_server("null", extra_args=("--debug-stats",)) as handle:
        yield handle


@pytest.fixture(scope="module")
def unbatched_server() -> Iterator[ServerHandle]:
    """``--client-config sample_use_retrieve_futures=false``."""
    args = ("--debug-stats", "--client-config=sample_use_retrieve_futures=false")
    with session_server("null", extra_args=args) as handle:
        yield handle


def _stats(server: ServerHandle) -> dict[str, int]:
    reply = requests.get(f"{server.base_url}{DEBUG_STATS}", headers=server.headers(), timeout=30)
    assert reply.status_code == 200, reply.text
    stats: dict[str, int] = reply.json()
    return stats


def _reference(server: ServerHandle) -> list[list[int]]:
    """Each sample's tokens fetched one by one with retrieve_future (base_model asample)."""
    api = Api(server)
    try:
        out = []
        for index in range(SDK_SAMPLES):
            future = api.ok("/asample", _sample_body(index, base_model=MODEL))
            out.append(api.result(future)["sequences"][0]["tokens"])
        return out
    finally:
        api.close()


def _sdk_fan_out(
    server: ServerHandle, *, held_before: int | None
) -> tuple[list[list[int]], dict[str, int]]:
    """The SDK's results, and the server's counters once they are in (the session still
    open). With ``held_before``, waits until the SDK's acknowledgements dropped most of its
    futures (the poller sends them with its next poll, right after the fetches)."""
    with service_client(server) as service:
        sampler = service.create_sampling_client(base_model=MODEL).result(timeout=60)
        futures = []
        for index in range(SDK_SAMPLES):
            body = _sample_body(index)
            prompt = types.ModelInput.from_ints(body["prompt"]["chunks"][0]["tokens"])
            params = types.SamplingParams(max_tokens=6, seed=index)
            futures.append(sampler.sample(prompt, 1, params))
        tokens = [list(f.result(timeout=120).sequences[0].tokens) for f in futures]
        stats = _stats(server)
        deadline = time.monotonic() + 20

        def acknowledged(stats: dict[str, int]) -> bool:
            assert held_before is not None
            return stats["futures_held"] - held_before < SDK_SAMPLES // 2

        while held_before is not None and not acknowledged(stats):
            assert time.monotonic() < deadline, stats
            time.sleep(0.1)
            stats = _stats(server)
        return tokens, stats


def _config(server: ServerHandle) -> dict[str, Any]:
    reply = requests.post(
        f"{server.base_url}/api/v1/client/config", json={}, headers=server.headers(), timeout=30
    )
    config: dict[str, Any] = reply.json()
    return config


def test_official_sdk_samples_through_retrieve_futures(batched_server: ServerHandle) -> None:
    assert _config(batched_server)["sample_use_retrieve_futures"] is True
    expected = _reference(batched_server)
    assert len({tuple(t) for t in expected}) > SDK_SAMPLES // 2  # the inputs differ
    before = _stats(batched_server)
    assert before["completion_log_entries"] == 0
    tokens, stats = _sdk_fan_out(batched_server, held_before=before["futures_held"])
    assert tokens == expected
    assert stats["samples_submitted"] - before["samples_submitted"] == SDK_SAMPLES
    # The SDK's poller acknowledged the results it fetched: their futures are gone at once
    # (nothing waits for the one-minute retention), and the log holds nothing it reported.
    assert stats["futures_held"] - before["futures_held"] < SDK_SAMPLES // 2
    assert stats["completion_log_entries"] < SDK_SAMPLES // 2
    assert stats["samples_in_flight"] == 0


def test_official_sdk_samples_per_future_with_the_flag_off(
    unbatched_server: ServerHandle,
) -> None:
    assert _config(unbatched_server)["sample_use_retrieve_futures"] is False
    expected = _reference(unbatched_server)
    tokens, stats = _sdk_fan_out(unbatched_server, held_before=None)
    assert tokens == expected
    # Nobody polled retrieve_futures: every sample of the session is still in its log
    # (until the futures' retention sweeps them), and each was fetched on its own.
    assert stats["completion_log_entries"] == SDK_SAMPLES
    assert stats["samples_in_flight"] == 0
