"""A sample that meets its sampling session released under it (the session ended while the
sample was queued), in-process: a null-engine app behind Starlette's TestClient.

Releasing a session removes its samplers from the server's table, then from the engine, on a
worker. A sample that checked the table before the removal and reached the engine after it used
to fail as a *user* error ("no sampler ..."), and a sample that rebuilt the sampler before the
engine's drop left the table naming a sampler the engine no longer held. The engine's drop is
done directly here, to put the server in that state without a race.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from _servers import new_api_key
from starlette.testclient import TestClient

from tinkex_actors.server.app import create_app
from tinkex_actors.server.settings import ServerSettings
from tinkex_actors.server.state import ServerState

from ._helpers import API, MODEL, datum_json

KEY = new_api_key()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[TestClient, ServerState]]:
    settings = ServerSettings(
        data_dir=tmp_path / "data", api_keys=(KEY,), engine="null", poll_hold_seconds=1
    )
    application = create_app(settings)
    with TestClient(application, base_url="http://127.0.0.1") as client:
        client.headers["X-API-Key"] = KEY
        yield client, application.state.server


def _ok(client: TestClient, path: str, body: dict[str, Any]) -> Any:
    reply = client.post(API + path, json=body)
    assert reply.status_code == 200, (path, reply.text)
    return reply.json()


def _answer(client: TestClient, future: dict[str, Any]) -> requests.Response:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        reply = client.post(API + "/retrieve_future", json={"request_id": future["request_id"]})
        if reply.status_code != 200 or reply.json().get("type") != "try_again":
            return reply
    raise AssertionError("future not done")


def _sample(client: TestClient, sampler: str) -> dict[str, Any]:
    body = {
        "sampling_session_id": sampler,
        "prompt": {"chunks": [{"type": "encoded_text", "tokens": [4, 5, 6]}]},
        "sampling_params": {"max_tokens": 4, "seed": 3},
    }
    return _ok(client, "/asample", body)  # type: ignore[no-any-return]


def _session(client: TestClient) -> str:
    return str(_ok(client, "/create_session", {"tags": [], "sdk_version": "0.38.0"})["session_id"])


def test_a_base_sampler_dropped_by_the_engine_is_rebuilt_for_the_sample(
    app: tuple[TestClient, ServerState],
) -> None:
    client, state = app
    sampler = _ok(
        client,
        "/create_sampling_session",
        {"session_id": _session(client), "sampling_session_seq_id": 0, "base_model": MODEL},
    )["sampling_session_id"]
    first = _answer(client, _sample(client, sampler))
    assert first.status_code == 200, first.text
    assert "sequences" in first.json(), first.text

    state.host.engine.drop_sampler(sampler)  # the release's drop, after the table still named it
    assert sampler in state.samplers

    again = _answer(client, _sample(client, sampler))
    assert again.status_code == 200, again.text
    assert "error" not in again.json(), again.json()
    assert again.json()["sequences"] == first.json()["sequences"]  # same seed, same tokens
    # The table and the engine agree again: the next sample needs no rebuild.
    assert (
        _answer(client, _sample(client, sampler)).json()["sequences"] == first.json()["sequences"]
    )


def test_a_snapshot_sampler_released_under_a_queued_sample_answers_410_then_404(
    app: tuple[TestClient, ServerState],
) -> None:
    client, state = app
    session = _session(client)
    model = _ok(
        client,
        "/create_model",
        {
            "session_id": session,
            "model_seq_id": 0,
            "base_model": MODEL,
            "lora_config": {"rank": 4, "seed": 0},
        },
    )
    model_id = _answer(client, model).json()["model_id"]
    data = [datum_json([1, 2, 3, 4], [2, 3, 4, 5])]
    fwd = _ok(
        client,
        "/forward_backward",
        {
            "model_id": model_id,
            "seq_id": 1,
            "forward_backward_input": {"data": data, "loss_fn": "cross_entropy"},
        },
    )
    assert _answer(client, fwd).status_code == 200
    snapshot = _answer(
        client,
        _ok(
            client,
            "/save_weights_for_sampler",
            {"model_id": model_id, "seq_id": 2, "sampling_session_seq_id": 1},
        ),
    ).json()["sampling_session_id"]
    assert "sequences" in _answer(client, _sample(client, snapshot)).json()

    # The snapshot's adapter goes with the model; nothing remains to rebuild the sampler from.
    with state.lock:
        state.models.pop(model_id)
    state.host.engine.drop_sampler(snapshot)

    gone = _answer(client, _sample(client, snapshot))
    assert gone.status_code == 410, gone.text  # the client sends the sample again ...
    assert "released while this sample was queued" in gone.json()["detail"]
    assert "snapshot of a live adapter" in gone.json()["detail"]
    assert snapshot not in state.samplers
    # ... and is told the sampling session is gone for good (the SDK's SamplerLostError).
    refused = client.post(
        API + "/asample",
        json={
            "sampling_session_id": snapshot,
            "prompt": {"chunks": [{"type": "encoded_text", "tokens": [4]}]},
            "sampling_params": {"max_tokens": 1},
        },
    )
    assert refused.status_code == 404, refused.text
    assert snapshot in refused.json()["detail"]
