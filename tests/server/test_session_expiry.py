"""Session expiry: heartbeats keep a session, silence (or the test hook) expires it, then 410.

Two private null servers: ``quick`` expires sessions after 3 s without a heartbeat (swept
twice a second); ``hooks`` never on its own within a test (10 minutes), so the test hook
decides when a session expires.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import tinker
from _servers import ServerHandle, session_server
from tinker import types

from ._helpers import MODEL, Api, datum_json
from ._sdk import ce_datum, service_client

TIMEOUT = 3.0
DATA = [datum_json([1, 2, 3, 4], [2, 3, 4, 5])]
PROMPT = {"chunks": [{"type": "encoded_text", "tokens": [4, 5, 6]}]}


@pytest.fixture(scope="module")
def quick() -> Iterator[ServerHandle]:
    args = (f"--session-timeout={TIMEOUT}", "--expiry-sweep-interval=0.5")
    with session_server("null", extra_args=args) as handle:
        yield handle


@pytest.fixture(scope="module")
def hooks() -> Iterator[ServerHandle]:
    with session_server("null", extra_args=("--session-timeout=600", "--test-hooks")) as handle:
        yield handle


@pytest.fixture
def quick_api(quick: ServerHandle) -> Iterator[Api]:
    api = Api(quick)
    yield api
    api.close()


@pytest.fixture
def hooks_api(hooks: ServerHandle) -> Iterator[Api]:
    api = Api(hooks)
    yield api
    api.close()


def _expired(reply: Any) -> None:
    assert reply.status_code == 410, reply.text
    assert "expired" in reply.json()["detail"]


def _sample_body(sampler: str) -> dict[str, Any]:
    return {
        "sampling_session_id": sampler,
        "prompt": PROMPT,
        "sampling_params": {"max_tokens": 2, "seed": 1},
    }


def test_heartbeats_keep_a_session_and_an_overdue_one_expires(quick_api: Api) -> None:
    session = quick_api.session()
    model = quick_api.create_model(session)
    seq = 1
    alive_until = time.monotonic() + TIMEOUT + 1.5
    while time.monotonic() < alive_until:
        assert quick_api.post("/session_heartbeat", {"session_id": session}).status_code == 200
        quick_api.fwdbwd(model, seq, DATA)
        seq += 1
        time.sleep(0.5)
    time.sleep(TIMEOUT + 0.5)
    # Whichever notices first (this heartbeat or the sweep), the session has expired.
    _expired(quick_api.post("/session_heartbeat", {"session_id": session}))
    _expired(quick_api.post("/optim_step", {"model_id": model, "seq_id": seq}))
    assert (
        "no heartbeat for more than 3 s"
        in quick_api.post("/session_heartbeat", {"session_id": session}).json()["detail"]
    )


def test_the_sweep_expires_a_silent_session(quick: ServerHandle, quick_api: Api) -> None:
    session = quick_api.session()
    model = quick_api.create_model(session)
    deadline = time.monotonic() + TIMEOUT + 10
    while f"session_id={session}" not in quick.log_tail(20000):
        assert time.monotonic() < deadline, "the sweep did not expire the session"
        time.sleep(0.2)
    # Nothing named the session since: the sweep released the model.
    _expired(quick_api.post("/optim_step", {"model_id": model, "seq_id": 1}))


def test_downtime_does_not_count_against_a_session(quick: ServerHandle, quick_api: Api) -> None:
    session = quick_api.session()
    quick.stop()
    try:
        time.sleep(TIMEOUT + 0.5)
    finally:
        quick.start()
    assert quick_api.post("/session_heartbeat", {"session_id": session}).status_code == 200


def test_calls_naming_an_expired_session_get_410(hooks_api: Api) -> None:
    session = hooks_api.session()
    model = hooks_api.create_model(session)
    hooks_api.fwdbwd(model, 1, DATA)
    checkpoint = hooks_api.save(model, 2, "kept")
    from_base = hooks_api.ok(
        "/create_sampling_session",
        {"session_id": session, "sampling_session_seq_id": 0, "base_model": MODEL},
    )["sampling_session_id"]
    snapshot = hooks_api.result(
        hooks_api.ok(
            "/save_weights_for_sampler",
            {"model_id": model, "seq_id": 3, "sampling_session_seq_id": 1},
        )
    )["sampling_session_id"]

    expired = hooks_api.ok("/_test/expire_session", {"session_id": session})
    assert expired == {"session_id": session, "expired": True}
    assert hooks_api.ok("/_test/expire_session", {"session_id": session})["expired"] is False

    _expired(hooks_api.post("/session_heartbeat", {"session_id": session}))
    create = {"session_id": session, "model_seq_id": 5, "base_model": MODEL}
    _expired(hooks_api.post("/create_model", create))
    _expired(
        hooks_api.post(
            "/create_sampling_session",
            {"session_id": session, "sampling_session_seq_id": 2, "base_model": MODEL},
        )
    )
    load = {"session_id": session, "model_seq_id": 6, "path": checkpoint}
    _expired(hooks_api.post("/load_weights", load))
    gone = hooks_api.post("/optim_step", {"model_id": model, "seq_id": 4})
    _expired(gone)
    assert "create_training_client_from_state" in gone.json()["detail"]
    # Finishing an ended session is a no-op; its run and checkpoint stay.
    finish = hooks_api.post(f"/sessions/{session}/finish", {"reason": {"type": "success"}})
    assert finish.status_code == 204
    assert hooks_api.get(f"/training_runs/{model}").status_code == 200
    # A base-model sampler lost nothing: it keeps answering. The live-adapter snapshot is gone.
    assert hooks_api.result(hooks_api.ok("/asample", _sample_body(from_base)))["sequences"]
    assert hooks_api.post("/asample", _sample_body(snapshot)).status_code == 404
    # The run continues in a new session from its checkpoint.
    fresh = hooks_api.session()
    restored = hooks_api.ok(
        "/load_weights", {"session_id": fresh, "model_seq_id": 0, "path": checkpoint}
    )
    assert hooks_api.result(restored)["model_id"] == f"{fresh}:train:0"


def test_the_test_hook_is_only_for_the_owner_and_only_when_enabled(
    hooks_api: Api, hooks: ServerHandle, null_server: ServerHandle
) -> None:
    session = hooks_api.session()
    other = Api(hooks, hooks.other_api_key)
    plain = Api(null_server)
    try:
        foreign = other.post("/_test/expire_session", {"session_id": session})
        assert foreign.status_code == 404
        assert plain.post("/_test/expire_session", {"session_id": session}).status_code == 404
        assert hooks_api.post("/session_heartbeat", {"session_id": session}).status_code == 200
    finally:
        other.close()
        plain.close()


def test_official_sdk_gets_410_once_its_session_expired(
    hooks: ServerHandle, hooks_api: Api
) -> None:
    with service_client(hooks) as service:
        training = service.create_lora_training_client(base_model=MODEL, rank=4, seed=1).result()
        training.forward_backward([ce_datum([1, 2, 3, 4])], "cross_entropy").result()
        session = training.model_id.split(":")[0]
        assert hooks_api.ok("/_test/expire_session", {"session_id": session})["expired"]
        with pytest.raises(tinker.APIStatusError) as info:
            training.optim_step(types.AdamParams(learning_rate=1e-3)).result()
        assert info.value.status_code == 410
        assert "expired" in str(info.value)
