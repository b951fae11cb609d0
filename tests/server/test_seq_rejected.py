"""A request answered 4xx uses up its seq_id: the model's next request does not wait for it.

The shared null server keeps the default ``--seq-gap-timeout`` (30 s). Every wait below is at
most :data:`FAST` seconds, far below it: a server that waited for the rejected seq_id (and then
skipped the gap) would fail these tests with a timeout instead of passing them late.
"""

from __future__ import annotations

from typing import Any

import pytest
import tinker
from _servers import ServerHandle
from tinker import types

from tinkex_actors._constants import NULL_ENGINE_VOCAB_SIZE

from ._helpers import MODEL, PROTOBUF, Api, datum_json, fwdbwd_proto
from ._sdk import ce_datum, service_client

FAST = 10.0
DATA = [datum_json([1, 2, 3], [2, 3, 4])]
OUT_OF_VOCAB = NULL_ENGINE_VOCAB_SIZE + 7


def _optim(api: Api, model: str, seq: int) -> dict[str, Any]:
    return api.ok("/optim_step", {"model_id": model, "seq_id": seq})


def _done_fast(api: Api, future: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = api.poll(future["request_id"], timeout=FAST).json()
    assert "error" not in body, body
    return body


def _still_waiting(api: Api, future: dict[str, Any]) -> bool:
    """One long poll (the server holds it 2 s): True when the future is not done yet."""
    reply = api.post("/retrieve_future", {"request_id": future["request_id"]})
    assert reply.status_code == 200, reply.text
    return bool(reply.json().get("type") == "try_again")


def test_official_sdk_rejected_forward_backward_then_optim_step(null_server: ServerHandle) -> None:
    """The cookbook's sequence: a forward_backward refused with 400, an optim_step already sent."""
    with service_client(null_server) as service:
        training = service.create_lora_training_client(base_model=MODEL, rank=4).result()
        bad = ce_datum([1, 2, 3, OUT_OF_VOCAB])
        rejected = training.forward_backward([bad], "cross_entropy")
        step = training.optim_step(types.AdamParams(learning_rate=1e-3))
        with pytest.raises(tinker.APIStatusError) as refused:
            rejected.result(timeout=FAST)
        assert refused.value.status_code == 400
        assert "target_tokens" in str(refused.value)
        assert "grad_norm:mean" in step.result(timeout=FAST).metrics
        # The model goes on training in order.
        good = [ce_datum([1, 5, 9, 13])]
        out = training.forward_backward(good, "cross_entropy").result(timeout=FAST)
        assert out.metrics["loss:sum"] > 0
        training.optim_step(types.AdamParams(learning_rate=1e-3)).result(timeout=FAST)


@pytest.mark.parametrize("how", ["json-unknown-loss", "proto-out-of-vocab", "bad-save-name"])
def test_http_rejected_request_then_next_seq_runs_at_once(api: Api, how: str) -> None:
    model = api.create_model(api.session())
    if how == "json-unknown-loss":
        reply = api.post(
            "/forward_backward",
            {
                "model_id": model,
                "seq_id": 1,
                "forward_backward_input": {"data": DATA, "loss_fn": "no_such_loss"},
            },
        )
    elif how == "proto-out-of-vocab":
        body = fwdbwd_proto(model, 1, [([1, 2, 3], [2, 3, OUT_OF_VOCAB], [1.0, 1.0, 1.0])])
        reply = api.fwdbwd_proto(model, 1, body, zstd=True)
    else:
        reply = api.post("/save_weights", {"model_id": model, "seq_id": 1, "path": "../x"})
    assert reply.status_code == 400, reply.text
    assert reply.json()["detail"]
    _done_fast(api, _optim(api, model, 2))


def test_a_409_save_uses_its_seq_id_too(api: Api) -> None:
    model = api.create_model(api.session())
    api.save(model, 1, "taken")
    clash = api.post("/save_weights", {"model_id": model, "seq_id": 2, "path": "taken"})
    assert clash.status_code == 409
    assert clash.headers["x-should-retry"] == "false"
    _done_fast(api, _optim(api, model, 3))


def test_unreadable_or_foreign_rejections_leave_the_seq_id_open(api: Api, other_api: Api) -> None:
    model = api.create_model(api.session())
    # Another tenant cannot use up this model's seq_ids (their request is a 404)...
    foreign = other_api.post("/optim_step", {"model_id": model, "seq_id": 1})
    assert foreign.status_code == 404
    # ...and a body the server cannot read names no seq_id.
    truncated = api.post(
        "/forward_backward",
        data=b'{"model_id": "%s", "seq_id": 1, "forward_backward_inp' % model.encode(),
        headers={"Content-Type": "application/json"},
    )
    assert truncated.status_code == 400
    broken_proto = api.post(
        "/forward_backward", data=b"\xff" * 32, headers={"Content-Type": PROTOBUF}
    )
    assert broken_proto.status_code == 400
    second = _optim(api, model, 2)
    assert _still_waiting(api, second)  # seq 1 may still arrive
    first = _optim(api, model, 1)
    _done_fast(api, first)
    _done_fast(api, second)
