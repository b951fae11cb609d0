"""Every registry loss over HTTP: the official SDK 0.38 runs each one on the null server, and
bad loss names, inputs and config keys are 400s that name what is wrong."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _servers import ServerHandle
from tinker import types
from tinker.proto import tinker_public_pb2 as upstream_pb

from tinkex_actors.server.engines.losses import LOSSES

from ._helpers import MODEL, Api
from ._sdk import service_client

TOKENS = [5, 9, 13, 17, 21, 25]
N = len(TOKENS) - 1

#: Inputs and config each loss gets on top of target_tokens (RL losses: logprobs, advantages).
EXTRA: dict[str, tuple[dict[str, list[float]], dict[str, float]]] = {
    "cross_entropy": ({"weights": [0.0, 1.0, 1.0, 1.0, 1.0]}, {}),
    "importance_sampling": ({}, {}),
    "ppo": ({"clip_low_threshold": [0.5] * N}, {"clip_high_threshold": 1.5}),
    "cispo": ({}, {"clip_high_threshold": 2.0}),
    "dro": ({}, {"beta": 0.05}),
    "gspo": ({"sequence_ratio_mask": [0.0, 1.0, 1.0, 1.0, 1.0]}, {"clip_low_threshold": 0.9}),
    "stable_reinforce": ({}, {"kl_coeff": 0.1}),
}


def _datum(name: str) -> types.Datum:
    inputs: dict[str, Any] = {"target_tokens": TOKENS[1:]}
    if LOSSES[name].required:
        inputs["logprobs"] = [-7.0, -7.5, -6.5, -8.0, -7.2]
        inputs["advantages"] = [1.0, -0.5, 0.25, 2.0, -1.0]
    inputs.update(EXTRA[name][0])
    return types.Datum(model_input=types.ModelInput.from_ints(TOKENS[:-1]), loss_fn_inputs=inputs)


def test_official_sdk_runs_every_registry_loss(null_server: ServerHandle) -> None:
    assert set(EXTRA) == set(LOSSES)
    with service_client(null_server) as service:
        training = service.create_lora_training_client(base_model=MODEL, rank=4, seed=2).result()
        for name in sorted(LOSSES):
            config = EXTRA[name][1] or None
            out = training.forward_backward([_datum(name)], name, config).result()  # type: ignore[arg-type]
            assert set(out.metrics) == {"loss:sum"}, name
            assert np.isfinite(out.metrics["loss:sum"]), name
            elementwise = out.loss_fn_outputs[0]["elementwise_loss"].to_numpy()
            assert elementwise.shape == (N,)
            assert out.metrics["loss:sum"] == pytest.approx(float(elementwise.sum()), rel=1e-5)
            training.optim_step(types.AdamParams(learning_rate=1e-4)).result()


def _proto(
    model_id: str,
    loss_fn: str,
    inputs: dict[str, list[float]],
    config: dict[str, float | str] | None = None,
) -> bytes:
    """A ForwardBackwardRequest as 0.38 writes it (config in both maps, text only in v2)."""
    message = upstream_pb.ForwardBackwardRequest(model_id=model_id, seq_id=1, loss_fn=loss_fn)
    datum = message.data.add()
    datum.model_input.add().encoded_text.tokens = np.asarray(TOKENS[:-1], "<i4").tobytes()
    for key, values in {"target_tokens": TOKENS[1:], **inputs}.items():
        tensor = datum.loss_fn_inputs[key]
        integer = key == "target_tokens"
        tensor.dtype = upstream_pb.DTYPE_INT64 if integer else upstream_pb.DTYPE_FLOAT32
        tensor.shape.append(len(values))
        tensor.dense = np.asarray(values, "<i8" if integer else "<f4").tobytes()
    for key, value in (config or {}).items():
        if isinstance(value, str):
            message.loss_fn_config_v2[key].text = value
        else:
            message.loss_fn_config[key] = value
            message.loss_fn_config_v2[key].number = value
    return message.SerializeToString()


RL = {"logprobs": [-7.0] * N, "advantages": [1.0] * N}


@pytest.mark.parametrize(
    ("loss_fn", "inputs", "config", "words"),
    [
        ("mse", RL, None, ["loss_fn", "'mse'", *sorted(LOSSES)]),
        ("custom", RL, {"loss_id": "l-1"}, ["custom", "custom_loss_server_side"]),
        ("gspo", {"logprobs": [-7.0] * N}, None, ["advantages", "gspo"]),
        ("stable_reinforce", {"advantages": [1.0] * N}, None, ["logprobs", "needs"]),
        ("cispo", {**RL, "weights": [1.0] * N}, None, ["weights", "unexpected"]),
        ("ppo", RL, {"beta": 1.0}, ["loss_fn_config", "beta", "clip_low_threshold"]),
        ("dro", RL, {"beta": "high"}, ["loss_fn_config", "beta", "finite number", "str"]),
        ("dro", RL, {"beta": -2.0}, ["beta", ">= 0"]),
        ("gspo", {**RL, "sequence_ratio_mask": [1.0, 1.0]}, None, ["sequence_ratio_mask", "2"]),
    ],
)
def test_bad_losses_are_named_400s(
    api: Api,
    loss_fn: str,
    inputs: dict[str, list[float]],
    config: dict[str, float | str] | None,
    words: list[str],
) -> None:
    session = api.session()
    model_id = api.create_model(session)
    reply = api.fwdbwd_proto(model_id, 1, _proto(model_id, loss_fn, inputs, config))
    assert reply.status_code == 400, reply.text
    detail = reply.json()["detail"]
    for word in words:
        assert word in detail, (word, detail)
    # Nothing was queued: the same seq_id runs a good request.
    good = api.fwdbwd_proto(model_id, 1, _proto(model_id, "importance_sampling", RL))
    assert good.status_code == 200, good.text


def test_legacy_json_bodies_reach_the_registry(api: Api) -> None:
    session = api.session()
    model_id = api.create_model(session)
    body = {
        "forward_backward_input": {
            "data": [
                {
                    "model_input": {"chunks": [{"type": "encoded_text", "tokens": TOKENS[:-1]}]},
                    "loss_fn_inputs": {"target_tokens": TOKENS[1:], **RL},
                }
            ],
            "loss_fn": "stable_reinforce",
            "loss_fn_config": {"kl_coeff": 0.2},
        },
        "model_id": model_id,
        "seq_id": 1,
    }
    out = api.result(api.ok("/forward_backward", body))
    assert np.isfinite(out["metrics"]["loss:sum"])
    body["forward_backward_input"]["loss_fn_config"] = {"kl": 0.2}
    reply = api.post("/forward_backward", {**body, "seq_id": 2})
    assert reply.status_code == 400
    assert "'kl'" in reply.json()["detail"]
    assert "kl_coeff" in reply.json()["detail"]
