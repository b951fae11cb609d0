"""Optimizer families through tinkex_actors: create_lora_training_client(optimizer=...),
optim_step with AdamParams or DimuonParams, the bodies on the wire against the official SDK's,
bad parameters, and Dimuon learning the demo task on the torch engine."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import tinker.types as T  # noqa: N812 - short oracle prefix
from _servers import ServerHandle
from tinker._compat import model_dump

from tinkex_actors import Config, ServiceClient, types
from tinkex_actors.demo._task import build_datum, load_facts
from tinkex_actors.errors import BadRequestError, ValidationError

from ._backends import Recorder
from .conftest import BASE_MODEL, datum

DATA = [datum([2 + i, 7 + i, 11 + i, 19 + i, 23 + i, 29 + i]) for i in range(3)]
DIMUON = types.DimuonParams(learning_rate=1e-3, grad_clip_norm=1.0, beta1=0.8)
WAIT = 30
#: A Dimuon learning rate that suits the demo task (update norm lr * sqrt(rank) per matrix).
DEMO_DIMUON_LR = 0.05


def official_body(model: Any) -> Any:
    """What the official SDK's resources send for ``model``."""
    return model_dump(model, exclude_unset=False, exclude_none=True, mode="json")


@pytest.fixture
def recorded(null_server: ServerHandle) -> Iterator[tuple[ServiceClient, Recorder]]:
    config = Config(api_key=null_server.api_key, base_url=null_server.base_url)
    recorder = Recorder(config)
    with ServiceClient(config, backend=recorder) as service:
        yield service, recorder


def _json(recorder: Recorder, path: str) -> list[dict[str, Any]]:
    return [orjson.loads(e.body or b"{}") for e in recorder.sent(path)]


def test_dimuon_model_trains_and_its_bodies_match_the_official_sdk(
    recorded: tuple[ServiceClient, Recorder],
) -> None:
    service, recorder = recorded
    training = service.create_lora_training_client(
        BASE_MODEL,
        {"rank": 4, "seed": 3},
        {"run": "dimuon"},
        optimizer=types.OptimizerConfig(type="dimuon"),
        timeout=WAIT,
    )
    assert training.get_info().optimizer_config == types.OptimizerConfig(type="dimuon", version=1)
    losses = []
    for _ in range(4):
        step = training.forward_backward(DATA, "cross_entropy")
        optim = training.optim_step(DIMUON)
        losses.append(step.result(timeout=WAIT).metrics["loss:sum"])
        assert "grad_norm:mean" in (optim.result(timeout=WAIT).metrics or {})
    assert all(b < a for a, b in itertools.pairwise(losses)), losses

    (created,) = _json(recorder, "/create_model")
    assert created == official_body(
        T.CreateModelRequest(
            session_id=created["session_id"],
            model_seq_id=created["model_seq_id"],
            base_model=BASE_MODEL,
            user_metadata={"run": "dimuon"},
            lora_config=T.LoraConfig(rank=4, seed=3),
            optimizer_config=T.DimuonOptimizerConfig(),
        )
    )
    steps = _json(recorder, "/optim_step")
    assert len(steps) == 4
    for body in steps:
        assert body == official_body(
            T.OptimStepRequest(
                optim_params=T.DimuonParams(learning_rate=1e-3, grad_clip_norm=1.0, beta1=0.8),
                model_id=training.model_id,
                seq_id=body["seq_id"],
            )
        )


def test_adamw_is_the_default_and_both_keywords_match_the_official_sdk(
    recorded: tuple[ServiceClient, Recorder],
) -> None:
    service, recorder = recorded
    training = service.create_lora_training_client(BASE_MODEL, {"rank": 4}, timeout=WAIT)
    assert training.get_info().optimizer_config == types.OptimizerConfig()
    adam = types.AdamParams(learning_rate=3e-4, weight_decay=0.01)
    training.forward_backward(DATA, "cross_entropy")
    training.optim_step(adam).result(timeout=WAIT)
    training.optim_step(adam_params=adam).result(timeout=WAIT)
    training.optim_step({"learning_rate": 3e-4, "weight_decay": 0.01}).result(timeout=WAIT)
    (created,) = _json(recorder, "/create_model")
    assert created["optimizer_config"] == {"type": "adamw"}
    assert created == official_body(
        T.CreateModelRequest(
            session_id=created["session_id"],
            model_seq_id=created["model_seq_id"],
            base_model=BASE_MODEL,
            lora_config=T.LoraConfig(rank=4),
        )
    )
    for body in _json(recorder, "/optim_step"):
        assert body == official_body(
            T.OptimStepRequest(
                adam_params=T.AdamParams(learning_rate=3e-4, weight_decay=0.01),
                model_id=training.model_id,
                seq_id=body["seq_id"],
            )
        )


def test_bad_optimizer_arguments_are_rejected_before_sending(
    recorded: tuple[ServiceClient, Recorder],
) -> None:
    service, recorder = recorded
    training = service.create_lora_training_client(BASE_MODEL, {"rank": 4}, timeout=WAIT)
    cases: list[tuple[tuple[Any, ...], dict[str, Any], str]] = [
        ((), {}, "optim_params"),
        (("adam",), {}, "optim_params"),
        ((types.LoraConfig(rank=4),), {}, "optim_params"),
        ((DIMUON,), {"adam_params": types.AdamParams()}, "adam_params"),
        ((), {"adam_params": DIMUON}, "adam_params"),
        (({"type": "sgd", "learning_rate": 1.0},), {}, "optim_params.type"),
        (({"type": "dimuon"},), {}, "optim_params"),  # Dimuon's learning_rate is required
        (({"learning_rate": -1.0},), {}, "AdamParams.learning_rate"),
    ]
    for args, kwargs, field in cases:
        with pytest.raises(ValidationError) as raised:
            training.optim_step(*args, **kwargs)
        assert raised.value.field == field, (args, kwargs, raised.value)
    with pytest.raises(ValidationError, match="expected AdamParams or DimuonParams, got str"):
        training.optim_step("adam")  # type: ignore[arg-type]
    for optimizer in ("dimuon", {"type": "adamw", "version": 1}, {"kind": "dimuon"}):
        with pytest.raises(ValidationError):
            service.create_lora_training_client_async(BASE_MODEL, optimizer=optimizer)  # type: ignore[arg-type]
    assert recorder.sent("/optim_step") == []
    assert len(recorder.sent("/create_model")) == 1
    # A mapping with "type": "dimuon" is Dimuon's parameters (the server then says 400 here).
    with pytest.raises(BadRequestError, match="DimuonParams"):
        training.optim_step({"type": "dimuon", "learning_rate": 1e-3}).result(timeout=WAIT)


def test_the_other_familys_parameters_are_a_400_naming_both(service: ServiceClient) -> None:
    adamw = service.create_lora_training_client(BASE_MODEL, {"rank": 4}, timeout=WAIT)
    dimuon = service.create_lora_training_client(
        BASE_MODEL, {"rank": 4}, optimizer={"type": "dimuon"}, timeout=WAIT
    )
    with pytest.raises(BadRequestError) as raised:
        adamw.optim_step(DIMUON).result(timeout=WAIT)
    assert "adamw" in str(raised.value)
    assert "DimuonParams" in str(raised.value)
    with pytest.raises(BadRequestError) as raised:
        dimuon.optim_step(types.AdamParams()).result(timeout=WAIT)
    assert "dimuon" in str(raised.value)
    assert "AdamParams" in str(raised.value)
    # The rejected seq_ids are used up on the server: the next calls run at once.
    for client, params in ((adamw, types.AdamParams()), (dimuon, DIMUON)):
        client.forward_backward(DATA, "cross_entropy")
        assert client.optim_step(params).result(timeout=10).metrics


@pytest.mark.torch
def test_dimuon_lowers_the_loss_on_the_demo_task(torch_server: ServerHandle) -> None:
    config = Config(api_key=torch_server.api_key, base_url=torch_server.base_url)
    with ServiceClient(config) as service:
        training = service.create_lora_training_client(
            BASE_MODEL,
            types.LoraConfig(rank=8, seed=0),
            optimizer=types.OptimizerConfig(type="dimuon"),
            timeout=120,
        )
        tokenizer = training.get_tokenizer()
        eos = tokenizer.encode("<|end_of_text|>")
        data = [build_datum(fact, tokenizer, eos) for fact in load_facts()]
        params = types.DimuonParams(learning_rate=DEMO_DIMUON_LR)
        losses = []
        for _ in range(6):
            step = training.forward_backward(data, "cross_entropy")
            training.optim_step(params)
            losses.append(step.result(timeout=120).metrics["loss:sum"])
    assert losses[-1] < 0.7 * losses[0], losses
    assert sum(b < a for a, b in itertools.pairwise(losses)) >= 4, losses
