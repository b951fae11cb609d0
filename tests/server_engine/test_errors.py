"""Bad input to the torch engine: typed errors that name the problem, state left unchanged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from tinkex_actors.server.engine_api import (
    AdamSpec,
    EngineDatum,
    EngineNotFoundError,
    EngineUserError,
    LoraSpec,
    SampleSpec,
)
from tinkex_actors.server.engines.torch_engine import TorchEngine

from ._util import BASE, VOCAB, ce_datum, dataset, rl_datum, sequence

pytestmark = pytest.mark.torch


def _datum(**changes: Any) -> EngineDatum:
    datum = ce_datum(sequence(0, 6))
    for key, value in changes.items():
        if key == "tokens":
            datum.tokens = value
        elif value is None:
            datum.inputs.pop(key)
        else:
            datum.inputs[key] = value
    return datum


BAD_DATA: list[tuple[str, Callable[[], EngineDatum], str]] = [
    (
        "token out of vocab",
        lambda: _datum(tokens=np.array([1, 2, VOCAB, 4, 5, 6])),
        "outside the vocabulary",
    ),
    (
        "negative token",
        lambda: _datum(tokens=np.array([1, -2, 3, 4, 5, 6])),
        "outside the vocabulary",
    ),
    ("target out of vocab", lambda: _datum(target_tokens=np.full(6, VOCAB + 5)), "target_tokens"),
    ("short targets", lambda: _datum(target_tokens=np.arange(5)), "the 6 model input tokens"),
    ("long weights", lambda: _datum(weights=np.ones(7, dtype=np.float32)), "'weights'"),
    ("nan weights", lambda: _datum(weights=np.full(6, np.nan, dtype=np.float32)), "finite"),
    ("missing targets", lambda: _datum(target_tokens=None), "'target_tokens'"),
    ("float targets", lambda: _datum(target_tokens=np.ones(6, dtype=np.float32)), "integer"),
    ("2-D targets", lambda: _datum(target_tokens=np.ones((6, 2), dtype=np.int64)), "shape"),
    ("unexpected input", lambda: _datum(advantages=np.ones(6, dtype=np.float32)), "unexpected key"),
    ("empty input", lambda: _datum(tokens=np.array([], dtype=np.int64)), "at least one token"),
    ("too long", lambda: ce_datum(sequence(0, 513)), "context length 512"),
]


@pytest.mark.parametrize(("case", "make", "message"), BAD_DATA, ids=[c[0] for c in BAD_DATA])
def test_bad_datum_is_rejected_before_any_change(
    engine: TorchEngine, adapter: str, case: str, make: Callable[[], EngineDatum], message: str
) -> None:
    del case
    probe = dataset(n=1, seed=1)
    before = engine.forward_backward(adapter, probe, "cross_entropy", {}, forward_only=True)
    good = dataset(n=2, seed=2)
    with pytest.raises(EngineUserError, match=message):
        engine.forward_backward(adapter, [*good, make()], "cross_entropy", {}, forward_only=False)
    # Nothing accumulated: an optimizer step (zero gradient, fresh Adam) changes nothing.
    engine.optim_step(adapter, AdamSpec(learning_rate=1.0))
    after = engine.forward_backward(adapter, probe, "cross_entropy", {}, forward_only=True)
    np.testing.assert_array_equal(before.outputs[0]["logprobs"], after.outputs[0]["logprobs"])


def test_rl_losses_need_their_inputs(engine: TorchEngine, adapter: str) -> None:
    for loss_fn in ("importance_sampling", "ppo", "cispo", "dro", "gspo", "stable_reinforce"):
        with pytest.raises(EngineUserError, match="needs 'logprobs'"):
            engine.forward_backward(
                adapter, [ce_datum(sequence(0, 4))], loss_fn, {}, forward_only=True
            )
    tokens = sequence(0, 4)
    datum = rl_datum(tokens, np.zeros(4), np.ones(4))
    del datum.inputs["advantages"]
    with pytest.raises(EngineUserError, match="needs 'advantages'"):
        engine.forward_backward(adapter, [datum], "ppo", {}, forward_only=True)


@pytest.mark.parametrize(
    ("loss_fn", "config", "message"),
    [
        ("nope", {}, "unknown loss function 'nope'"),
        ("cross_entropy", {"beta": 1.0}, "unknown key"),
        ("ppo", {"clip_low_threshold": 2.0, "clip_high_threshold": 1.0}, "clip_low_threshold <="),
        ("cispo", {"clip_high_threshold": float("inf")}, "finite"),
        ("dro", {"beta": -1.0}, "beta"),
    ],
)
def test_bad_loss_or_config(
    engine: TorchEngine, adapter: str, loss_fn: str, config: dict[str, float], message: str
) -> None:
    with pytest.raises(EngineUserError, match=message):
        engine.forward_backward(adapter, dataset(n=1), loss_fn, config, forward_only=True)


def test_empty_batch(engine: TorchEngine, adapter: str) -> None:
    with pytest.raises(EngineUserError, match="at least one datum"):
        engine.forward_backward(adapter, [], "cross_entropy", {}, forward_only=True)


@pytest.mark.parametrize(
    ("base", "lora", "message"),
    [
        ("no/such-model", LoraSpec(), "unknown base model"),
        (BASE, LoraSpec(rank=0), "rank"),
        (BASE, LoraSpec(rank=129), "rank"),
        (BASE, LoraSpec(train_attn=False, train_mlp=False, train_unembed=False), "at least one"),
    ],
)
def test_bad_adapter(engine: TorchEngine, base: str, lora: LoraSpec, message: str) -> None:
    with pytest.raises(EngineUserError, match=message):
        engine.create_adapter("never-created", base, lora)
    with pytest.raises(EngineNotFoundError):
        engine.optim_step("never-created", AdamSpec())


@pytest.mark.parametrize(
    ("adam", "field"),
    [
        (AdamSpec(learning_rate=-1.0), "learning_rate"),
        (AdamSpec(beta1=1.0), "beta1"),
        (AdamSpec(eps=0.0), "eps"),
        (AdamSpec(weight_decay=float("nan")), "weight_decay"),
        (AdamSpec(grad_clip_norm=-1.0), "grad_clip_norm"),
    ],
)
def test_bad_adam(engine: TorchEngine, adapter: str, adam: AdamSpec, field: str) -> None:
    with pytest.raises(EngineUserError, match=field):
        engine.optim_step(adapter, adam)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (SampleSpec(prompt=[1, VOCAB], max_tokens=1), "outside the vocabulary"),
        (SampleSpec(prompt=[], max_tokens=1), "at least one token"),
        (SampleSpec(prompt=[5] * 500, max_tokens=13), "context length 512"),
        (SampleSpec(prompt=[5], max_tokens=0), "max_tokens"),
        (SampleSpec(prompt=[5], max_tokens=1, top_p=0.0), "top_p"),
        (SampleSpec(prompt=[5], max_tokens=1, top_k=0), "top_k"),
        (SampleSpec(prompt=[5], max_tokens=1, stop_token_ids=(VOCAB,)), "stop token"),
        (SampleSpec(prompt=[5], max_tokens=1, stop_strings=("",)), "empty"),
    ],
)
def test_bad_sample(engine: TorchEngine, spec: SampleSpec, message: str) -> None:
    engine.create_sampler("bad-sample", BASE)
    try:
        with pytest.raises(EngineUserError, match=message):
            engine.sample("bad-sample", spec)
    finally:
        engine.drop_sampler("bad-sample")


def test_sampler_errors(engine: TorchEngine) -> None:
    with pytest.raises(EngineUserError, match="unknown base model"):
        engine.create_sampler("x", "no/such-model")
    with pytest.raises(EngineNotFoundError):
        engine.create_sampler("x", BASE, from_model_id="no-such-adapter")


def test_unknown_adapter(engine: TorchEngine) -> None:
    with pytest.raises(EngineNotFoundError, match="no-such"):
        engine.forward_backward("no-such", dataset(n=1), "cross_entropy", {}, forward_only=True)
