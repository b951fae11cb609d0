"""409s that can never succeed say so (``x-should-retry: false``); save options end to end.

The conflicts over plain HTTP; that our own SDK then stops at once, counted in the server's
request log; ``save_state`` / ``save_weights_for_sampler`` options with the official 0.38 SDK.
"""

from __future__ import annotations

import re
import time

import pytest
from _servers import ServerHandle
from tinker import types

from tinkex_actors import Config, ServiceClient
from tinkex_actors import types as our_types
from tinkex_actors.errors import ConflictError

from ._helpers import MODEL, Api
from ._sdk import ce_datum, rest_client, service_client

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _final(reply_status: int, headers: dict[str, str] | object) -> None:
    assert reply_status == 409
    assert headers["x-should-retry"] == "false"  # type: ignore[index]


def test_every_409_tells_clients_not_to_retry(api: Api) -> None:
    session = api.session()
    model = api.create_model(session, seq=0)
    same_id = api.post(
        "/create_model", {"session_id": session, "model_seq_id": 0, "base_model": MODEL}
    )
    _final(same_id.status_code, same_id.headers)

    body = {"model_id": model, "seq_id": 1, "adam_params": {"learning_rate": 0.001}}
    api.result(api.ok("/optim_step", body))
    other_payload = api.post("/optim_step", {**body, "adam_params": {"learning_rate": 0.5}})
    _final(other_payload.status_code, other_payload.headers)

    key = {"X-Idempotency-Key": f"ops-{time.time_ns()}"}
    api.ok("/optim_step", {"model_id": model, "seq_id": 2}, headers=key)
    reused_key = api.post("/optim_step", {"model_id": model, "seq_id": 3}, headers=key)
    _final(reused_key.status_code, reused_key.headers)

    api.save(model, 4, "name")
    taken = api.post("/save_weights", {"model_id": model, "seq_id": 5, "path": "name"})
    _final(taken.status_code, taken.headers)
    assert "overwrite" in taken.json()["detail"]

    sampler = api.save(model, 6, "for-sampling", sampler=True)
    base = f"/training_runs/{model}/checkpoints/sampler_weights/for-sampling"
    assert api.post(f"{base}/publish").status_code == 204
    published_twice = api.post(f"{base}/publish")
    _final(published_twice.status_code, published_twice.headers)
    assert api.request("DELETE", f"{base}/publish").status_code == 204
    private_twice = api.request("DELETE", f"{base}/publish")
    _final(private_twice.status_code, private_twice.headers)

    sampling = {"session_id": session, "sampling_session_seq_id": 0, "base_model": MODEL}
    api.ok("/create_sampling_session", sampling)
    elsewhere = api.post("/create_sampling_session", {**sampling, "model_path": sampler})
    _final(elsewhere.status_code, elsewhere.headers)


def _server_lines(server: ServerHandle, *parts: str) -> list[str]:
    lines = _ANSI.sub("", server.log_tail(10_000_000)).splitlines()
    return [line for line in lines if all(p in line for p in parts)]


def test_our_sdk_stops_at_a_final_conflict(null_server: ServerHandle) -> None:
    config = Config(api_key=null_server.api_key, base_url=null_server.base_url)
    with ServiceClient(config) as service:
        training = service.create_lora_training_client(MODEL, timeout=30)
        training.save_state("once").result(30)
        with pytest.raises(ConflictError, match="already exists"):
            training.save_state("once").result(30)
        # The model goes on: the refused save used its seq_id.
        datum = our_types.Datum(
            our_types.ModelInput.from_ints([1, 2, 3]),
            {"target_tokens": [2, 3, 4], "weights": [1.0, 1.0, 1.0]},
        )
        training.forward_backward([datum], "cross_entropy").result(30)
        model = training.model_id
    # Sent once, answered 409 once: no retries (the request log has one line per request).
    refusals = _server_lines(
        null_server, "path=/api/v1/save_weights", "status=409", f"model_id={model}"
    )
    assert len(refusals) == 1, refusals


def test_save_options_with_the_official_sdk(null_server: ServerHandle) -> None:
    data = [ce_datum([1, 5, 9, 13, 17])]
    with service_client(null_server) as service:
        training = service.create_lora_training_client(base_model=MODEL, rank=4).result()
        first = training.save_state(
            "opts", ttl_seconds=7200, user_metadata={"step": "0", "note": "first"}
        ).result()
        sampler = training.save_weights_for_sampler(
            "opts-sampler", user_metadata={"kind": "eval"}
        ).result()
        training.forward_backward(data, "cross_entropy").result()
        training.optim_step(types.AdamParams(learning_rate=1e-2)).result()
        trained = training.forward(data, "cross_entropy").result().metrics["loss:sum"]
        replaced = training.save_state("opts", overwrite=True, user_metadata={"step": "1"}).result()
        assert replaced.path == first.path

        rest = rest_client(null_server)
        listed = {
            c.tinker_path: c for c in rest.list_checkpoints(training.model_id).result().checkpoints
        }
        assert listed[first.path].user_metadata == {"step": "1"}
        assert listed[first.path].expires_at is None  # the new save has no TTL
        assert listed[sampler.path].user_metadata == {"kind": "eval"}
        assert listed[sampler.path].checkpoint_type == "sampler"

        # The name now holds the trained state.
        restored = service.create_training_client_from_state(first.path).result()
        assert restored.forward(data, "cross_entropy").result().metrics["loss:sum"] == trained
