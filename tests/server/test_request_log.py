"""The server's request log, in-process (a null-engine app behind Starlette's TestClient).

Each test starts its own app (a second or so with the null engine) so that the worker threads
it starts are stopped again before the thread-leak check.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _servers import new_api_key
from starlette.testclient import TestClient

from tinkex_actors.server.app import create_app
from tinkex_actors.server.settings import ServerSettings

from ._helpers import MODEL, datum_json

LOGGER = "tinkex_actors.server.requests"
KEY = new_api_key()
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = ServerSettings(
        data_dir=tmp_path / "data", api_keys=(KEY,), engine="null", poll_hold_seconds=1
    )
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as test_client:
        test_client.headers["X-API-Key"] = KEY
        yield test_client


def _lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, _ANSI.sub("", r.getMessage())) for r in caplog.records if r.name == LOGGER]


def _line(caplog: pytest.LogCaptureFixture, *parts: str) -> tuple[int, str]:
    found = [(level, text) for level, text in _lines(caplog) if all(p in text for p in parts)]
    assert len(found) == 1, (parts, _lines(caplog))
    return found[0]


def _result(client: TestClient, future: dict[str, Any]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.post(
            "/api/v1/retrieve_future", json={"request_id": future["request_id"]}
        ).json()
        if body.get("type") != "try_again":
            return body
    raise AssertionError("future not done")


def test_one_line_per_request_with_status_duration_and_model(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    session = client.post(
        "/api/v1/create_session", json={"tags": []}, headers={"X-Idempotency-Key": "idem-1"}
    ).json()["session_id"]
    level, text = _line(caplog, "path=/api/v1/create_session")
    assert level == logging.INFO
    for part in ("tinkex.server.request", "method=POST", "status=200", "idempotency_key=idem-1"):
        assert part in text
    assert re.search(r"duration_ms=\d+(\.\d+)?", text)

    created = client.post(
        "/api/v1/create_model",
        json={"session_id": session, "model_seq_id": 0, "base_model": MODEL},
    ).json()
    model = _result(client, created)["model_id"]
    step = client.post("/api/v1/optim_step", json={"model_id": model, "seq_id": 1}).json()
    _result(client, step)
    _line(caplog, "path=/api/v1/optim_step", "status=200", f"model_id={model}")
    polls = [t for _, t in _lines(caplog) if "path=/api/v1/retrieve_future" in t]
    assert polls
    assert all("status=200" in t for t in polls)
    # Every request got exactly one line.
    assert len(_lines(caplog)) == 3 + len(polls)


def test_client_errors_are_info_with_their_detail_and_never_a_key(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    session = client.post("/api/v1/create_session", json={"tags": []}).json()["session_id"]
    created = client.post(
        "/api/v1/create_model",
        json={"session_id": session, "model_seq_id": 0, "base_model": MODEL},
    ).json()
    model = _result(client, created)["model_id"]
    bad = client.post(
        "/api/v1/forward_backward",
        json={
            "model_id": model,
            "seq_id": 1,
            "forward_backward_input": {"data": [datum_json([1, 2], [2, 3])], "loss_fn": "nope"},
        },
    )
    assert bad.status_code == 400
    level, text = _line(caplog, "path=/api/v1/forward_backward")
    assert level == logging.INFO
    assert "status=400" in text
    assert f"model_id={model}" in text
    assert "unknown loss function" in text

    anonymous = client.post("/api/v1/create_session", json={}, headers={"X-API-Key": "tml-x"})
    assert anonymous.status_code == 401
    level, text = _line(caplog, "status=401")
    assert level == logging.INFO
    assert "missing or invalid API key" in text

    # Signed URLs: the query string (the signature) is never logged.
    denied = client.get("/api/v1/checkpoint_files/r/external_weights/n/f?expires=1&signature=abc")
    assert denied.status_code == 403
    _, text = _line(caplog, "status=403")
    assert "path=/api/v1/checkpoint_files/r/external_weights/n/f" in text
    assert "signature" not in text
    assert KEY not in caplog.text
    assert "tml-x" not in caplog.text


def test_silent_unless_info_is_enabled(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    assert client.post("/api/v1/create_session", json={"tags": []}).status_code == 200
    assert client.post("/api/v1/create_session", json={"tags": 5}).status_code == 400
    assert _lines(caplog) == []
