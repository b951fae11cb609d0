"""Server-side security: tenant isolation, signed URLs, bad bodies change nothing.

* **Isolation matrix**: tenant B tries every endpoint on tenant A's session, live model,
  sampling session, future and private checkpoints: read, sample from, train, save into,
  load from, download, publish, delete, finish. Every attempt is refused as if the resource
  did not exist (404), and afterwards A's resources are exactly as before and still work.
  (``tests/server/test_rest.py`` has the REST subset and publishing rules.)
* **Signed URLs**: altered signature, expiry, path (to another run's checkpoint too), repeated
  query parameters, and expired URLs are refused (403); a deleted checkpoint's URL serves
  nothing (404).
* **Bad bodies**: oversized, decompression bombs, malformed protobuf / JSON / zstd and
  mistyped fields are refused (400 / 413) without changing state: the model's next seq_id is
  still free and its next loss equals an untouched twin's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
import requests
import zstandard
from _servers import ServerHandle
from server._helpers import MODEL, PROTOBUF, Api, datum_json, fwdbwd_proto

DATA = [datum_json([1, 2, 3], [2, 3, 4])]


@pytest.fixture
def api(null_server: ServerHandle) -> Iterator[Api]:
    client = Api(null_server)
    yield client
    client.close()


@pytest.fixture
def other(null_server: ServerHandle) -> Iterator[Api]:
    client = Api(null_server, null_server.other_api_key)
    yield client
    client.close()


@dataclass
class Owned:
    """Tenant A's resources."""

    session: str
    model: str
    weights: str
    sampler_path: str
    sampler: str
    future: str
    next_seq: int


@pytest.fixture
def owned(api: Api) -> Owned:
    session = api.session()
    model = api.create_model(session)
    api.fwdbwd(model, 1, DATA)
    api.optim(model, 2)
    weights = api.save(model, 3, "w")
    sampler_path = api.save(model, 4, "s", sampler=True)
    created = api.ok(
        "/create_sampling_session",
        {"session_id": session, "sampling_session_seq_id": 0, "model_path": sampler_path},
    )
    future = api.ok(
        "/asample",
        {
            "sampling_session_id": created["sampling_session_id"],
            "prompt": {"chunks": [{"type": "encoded_text", "tokens": [1, 2]}]},
            "sampling_params": {"max_tokens": 2},
            "seq_id": 0,
        },
    )
    api.result(future)
    return Owned(
        session, model, weights, sampler_path, created["sampling_session_id"],
        future["request_id"], 5,
    )  # fmt: skip


def _state(api: Api, owned: Owned) -> dict[str, Any]:
    """What A can see of its resources (compared before and after B's attempts)."""
    checkpoints = api.get(f"/training_runs/{owned.model}/checkpoints").json()["checkpoints"]
    return {
        "session": api.get(f"/sessions/{owned.session}").json(),
        "run": api.get(f"/training_runs/{owned.model}").json()["last_checkpoint"],
        "checkpoints": sorted(
            (c["tinker_path"], c["public"], c.get("expires_at")) for c in checkpoints
        ),
        "sampler": api.get(f"/samplers/{owned.sampler}").json(),
    }


def _attempts(o: Owned, other_session: str) -> list[tuple[str, str, Any]]:
    """(method, path, body) of everything tenant B tries on A's resources."""
    w = o.weights.removeprefix(f"tinker://{o.model}/")
    s = o.sampler_path.removeprefix(f"tinker://{o.model}/")
    ckpt = f"/training_runs/{o.model}/checkpoints"
    prompt = {"chunks": [{"type": "encoded_text", "tokens": [1, 2]}]}
    fwd = {"forward_backward_input": {"data": DATA, "loss_fn": "cross_entropy"}}
    return [
        # read
        ("GET", f"/sessions/{o.session}", None),
        ("GET", f"/training_runs/{o.model}", None),
        ("GET", ckpt, None),
        ("POST", "/weights_info", {"tinker_path": o.weights}),
        ("POST", "/weights_info", {"tinker_path": o.sampler_path}),
        ("POST", "/get_info", {"model_id": o.model}),
        ("GET", f"/samplers/{o.sampler}", None),
        ("POST", "/retrieve_future", {"request_id": o.future}),
        # sample from
        ("POST", "/asample", {"sampling_session_id": o.sampler, "prompt": prompt,
                              "sampling_params": {"max_tokens": 2}, "seq_id": 0}),
        ("POST", "/asample", {"model_path": o.sampler_path, "prompt": prompt,
                              "sampling_params": {"max_tokens": 2}}),
        ("POST", "/create_sampling_session", {"session_id": other_session,
                                              "sampling_session_seq_id": 0,
                                              "model_path": o.sampler_path}),
        ("POST", "/create_sampling_session", {"session_id": o.session,
                                              "sampling_session_seq_id": 9,
                                              "base_model": MODEL}),
        # train, save into, load from
        ("POST", "/forward_backward", {**fwd, "model_id": o.model, "seq_id": o.next_seq}),
        ("POST", "/forward", {"forward_input": fwd["forward_backward_input"],
                              "model_id": o.model, "seq_id": o.next_seq}),
        ("POST", "/optim_step", {"model_id": o.model, "seq_id": o.next_seq,
                                 "adam_params": {"learning_rate": 0.1}}),
        ("POST", "/save_weights", {"model_id": o.model, "path": "stolen",
                                   "seq_id": o.next_seq}),
        ("POST", "/save_weights_for_sampler", {"model_id": o.model, "path": "stolen",
                                               "seq_id": o.next_seq}),
        ("POST", "/load_weights", {"model_id": o.model, "path": o.weights, "optimizer": True,
                                   "seq_id": o.next_seq}),
        ("POST", "/load_weights", {"session_id": other_session, "model_seq_id": 0,
                                   "path": o.weights, "optimizer": True}),
        ("POST", "/unload_model", {"model_id": o.model}),
        ("POST", "/create_model", {"session_id": o.session, "model_seq_id": 7,
                                   "base_model": MODEL, "lora_config": {"rank": 2}}),
        # download
        ("GET", f"{ckpt}/{w}/archive", None),
        ("GET", f"{ckpt}/{s}/archive", None),
        # change or delete
        ("POST", f"{ckpt}/{w}/publish", None),
        ("DELETE", f"{ckpt}/{s}/publish", None),
        ("PUT", f"{ckpt}/{w}/ttl", {"ttl_seconds": 3600}),
        ("DELETE", f"{ckpt}/{w}", None),
        ("DELETE", f"{ckpt}/{s}", None),
        # the session itself
        ("POST", "/session_heartbeat", {"session_id": o.session}),
        ("POST", f"/sessions/{o.session}/finish", {}),
    ]  # fmt: skip


def test_another_tenant_can_touch_nothing(api: Api, other: Api, owned: Owned) -> None:
    before = _state(api, owned)
    other_session = other.session()
    refused = []
    for method, path, body in _attempts(owned, other_session):
        reply = other.request(method, path, json=body)
        refused.append((method, path, reply.status_code))
        assert reply.status_code == 404, (method, path, reply.status_code, reply.text)
        assert set(reply.json()) == {"detail"}  # a refusal, none of A's data
    assert len(refused) >= 30
    # Listings show B nothing of A's.
    assert owned.session not in other.get("/sessions", params={"limit": 1000}).text
    assert owned.model not in other.get("/training_runs", params={"limit": 1000}).text
    assert owned.model not in other.get("/checkpoints", params={"limit": 1000}).text
    # A's resources are untouched and still work.
    assert _state(api, owned) == before
    assert api.post("/session_heartbeat", {"session_id": owned.session}).status_code == 200
    api.fwdbwd(owned.model, owned.next_seq, DATA)
    assert api.get(f"/training_runs/{owned.model}/checkpoints/weights/w/archive").ok


# --------------------------------------------------------------------------- signed URLs
def _tamper(url: str, path: str | None = None, **params: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(params)
    return urlunsplit((parts.scheme, parts.netloc, path or parts.path, urlencode(query), ""))


def test_signed_urls_cannot_be_altered_reused_or_outlived(
    api: Api, other: Api, owned: Owned
) -> None:
    url = api.get(f"/training_runs/{owned.model}/checkpoints/weights/w/archive").json()["url"]
    assert requests.get(url, timeout=30).status_code == 200
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    expires, signature = query["expires"][0], query["signature"][0]
    # B's own checkpoint: A's signature must not open it, nor B's open A's.
    b_session = other.session()
    b_model = other.create_model(b_session)
    other.save(b_model, 1, "w")
    b_url = other.get(f"/training_runs/{b_model}/checkpoints/weights/w/archive").json()["url"]
    swapped_path = parts.path.replace(owned.model, b_model)
    for bad in (
        _tamper(url, signature=signature[::-1]),
        _tamper(url, signature=signature.upper()),
        _tamper(url, expires=str(int(expires) + 3600)),
        _tamper(url, path=swapped_path),
        _tamper(b_url, signature=signature, expires=expires),
        url + f"&expires={int(expires) + 3600}",  # a repeated parameter
        _tamper(url, expires="1e12"),
        urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")),  # no query at all
    ):
        reply = requests.get(bad, timeout=30)
        assert reply.status_code == 403, (bad, reply.status_code)
    # Expired.
    short = api.get(
        f"/training_runs/{owned.model}/checkpoints/weights/w/archive",
        params={"expires_in": 1},
    ).json()["url"]
    time.sleep(2.1)
    assert requests.get(short, timeout=30).status_code == 403
    # Deleted: a still-valid URL serves nothing.
    assert api.request("DELETE", f"/training_runs/{owned.model}/checkpoints/weights/w").ok
    assert requests.get(url, timeout=30).status_code == 404


# --------------------------------------------------------------------------- bad bodies
def _loss_after(api: Api, model: str, seq: int) -> float:
    out = api.fwdbwd(model, seq, DATA)
    return float(out["metrics"]["loss:sum"])


def test_bad_bodies_are_refused_and_change_nothing(api: Api, null_server: ServerHandle) -> None:
    session = api.session()
    model, twin = api.create_model(session, seq=0), api.create_model(session, seq=1)
    limit = 4 * 1024 * 1024  # the shared null server's --max-body-bytes
    json_type = {"Content-Type": "application/json"}
    valid = fwdbwd_proto(model, 1, [([1, 2, 3], [2, 3, 4], [1.0, 1.0, 1.0])])
    bad: list[tuple[str, bytes, dict[str, str], int]] = [
        ("/forward_backward", b"\0" * (limit + 1), {"Content-Type": PROTOBUF}, 413),
        (
            "/forward_backward",
            zstandard.ZstdCompressor().compress(b"\0" * (20 * limit)),
            {"Content-Type": PROTOBUF, "Content-Encoding": "zstd"},
            413,
        ),
        ("/forward_backward", valid[: len(valid) // 2], {"Content-Type": PROTOBUF}, 400),
        ("/forward_backward", b"\xff" * 64, {"Content-Type": PROTOBUF}, 400),
        (
            "/forward_backward",
            b"zstd?",
            {"Content-Type": PROTOBUF, "Content-Encoding": "zstd"},
            400,
        ),
        ("/forward_backward", valid, {"Content-Type": PROTOBUF, "Content-Encoding": "br"}, 400),
        ("/forward_backward", b'{"model_id": ', json_type, 400),
        (
            "/forward_backward",
            b'{"model_id": "%s", "seq_id": 1, "forward_backward_input": {"data": [],'
            b' "loss_fn_config": true}}' % model.encode(),
            json_type,
            400,
        ),
        ("/optim_step", b'{"model_id": "%s", "seq_id": [1]}' % model.encode(), json_type, 400),
        ("/optim_step", b"[]", json_type, 400),
        (
            "/save_weights",
            b'{"model_id": "%s", "seq_id": 1, "path": "../x"}' % model.encode(),
            json_type,
            400,
        ),
        ("/save_weights", b"x" * (limit + 1), json_type, 413),
        ("/create_session", b'{"tags": "not-a-list"}', json_type, 400),
    ]
    checkpoints_before = api.get(f"/training_runs/{model}/checkpoints").json()
    sessions_before = api.get("/sessions", params={"limit": 1000}).json()
    for path, body, headers, status in bad:
        reply = api.post(path, data=body, headers=headers)
        assert reply.status_code == status, (path, body[:60], reply.status_code, reply.text)
        assert reply.json()["detail"]
    # Nothing changed: seq_id 1 is still free (no 409), the loss is the twin's, no checkpoint
    # or session appeared.
    assert _loss_after(api, model, 1) == _loss_after(api, twin, 1)
    assert api.get(f"/training_runs/{model}/checkpoints").json() == checkpoints_before
    assert api.get("/sessions", params={"limit": 1000}).json() == sessions_before
