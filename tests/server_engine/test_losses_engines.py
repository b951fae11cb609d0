"""Every registry loss on both engines: the same numbers from the same formula, the same
inputs accepted, the same bad input rejected with the same message."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from tinkex_actors.server.engine_api import (
    AdamSpec,
    EngineDatum,
    EngineUserError,
    LoraSpec,
)
from tinkex_actors.server.engines.losses import LOSSES, NUMPY_OPS, check_config, input_defaults
from tinkex_actors.server.engines.null_engine import NullEngine
from tinkex_actors.server.engines.torch_engine import TorchEngine

from ._util import BASE, rl_datum, sequence, uid

pytestmark = pytest.mark.torch

#: Inputs beyond target_tokens / logprobs / advantages that some losses take.
EXTRA = {
    "cross_entropy": {"weights": np.linspace(0.0, 2.0, 8)},
    "ppo": {"clip_high_threshold": np.full(8, 1.5)},
    "gspo": {"sequence_ratio_mask": np.array([0, 0, 1, 1, 1, 1, 1, 1.0])},
}
CONFIG = {
    "ppo": {"clip_low_threshold": 0.9},
    "cispo": {"clip_high_threshold": 1.5},
    "dro": {"beta": 0.5},
    "gspo": {"clip_low_threshold": 0.95, "clip_high_threshold": 1.05},
    "stable_reinforce": {"kl_coeff": 0.1},
}


@pytest.fixture
def null() -> Iterator[NullEngine]:
    engine = NullEngine()
    engine.start()
    engine.create_adapter("m", BASE, LoraSpec(rank=8, seed=7))
    yield engine
    engine.close()


def _datum(name: str, shift: float) -> EngineDatum:
    tokens = sequence(41, 8)
    if name == "cross_entropy":
        datum = EngineDatum(tokens=tokens[:-1].copy(), inputs={"target_tokens": tokens[1:].copy()})
    else:
        rng = np.random.default_rng(3)
        sampler = -rng.uniform(5.0, 9.0, 8) + shift
        datum = rl_datum(tokens, sampler, rng.normal(0.0, 1.0, 8))
    for key, value in EXTRA.get(name, {}).items():
        datum.inputs[key] = value.astype(np.float32)
    return datum


def _expected(name: str, datum: EngineDatum, lp: np.ndarray) -> np.ndarray:
    spec = LOSSES[name]
    config = check_config(spec, CONFIG.get(name, {}))
    n = lp.shape[0]
    inputs = {key: np.full(n, value) for key, value in input_defaults(spec, config).items()}
    for key in spec.inputs:
        if key in datum.inputs:
            inputs[key] = datum.inputs[key].astype(np.float64)
    result: np.ndarray = spec.elementwise(
        NUMPY_OPS, lp.astype(np.float64), inputs, config, np.ones(n)
    )
    return result


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_both_engines_compute_the_registry_formula(
    engine: TorchEngine, null: NullEngine, adapter: str, name: str
) -> None:
    for eng, model in ((engine, adapter), (null, "m")):
        # Sampler logprobs a little off the learner's, so ratios are not all 1.
        datum = _datum(name, shift=0.0)
        out = eng.forward_backward(model, [datum], name, CONFIG.get(name, {}), forward_only=True)
        lp = out.outputs[0]["logprobs"]
        if name != "cross_entropy":
            datum = rl_like(datum, lp)
            out = eng.forward_backward(
                model, [datum], name, CONFIG.get(name, {}), forward_only=True
            )
            lp = out.outputs[0]["logprobs"]
        elementwise = out.outputs[0]["elementwise_loss"]
        np.testing.assert_allclose(elementwise, _expected(name, datum, lp), rtol=1e-4, atol=1e-5)
        assert out.metrics["loss:sum"] == pytest.approx(float(elementwise.sum()), rel=1e-5)
        assert set(out.metrics) == {"loss:sum"}


def rl_like(datum: EngineDatum, lp: np.ndarray) -> EngineDatum:
    """The datum with sampler logprobs near ``lp`` (ratios between about 0.7 and 1.4)."""
    offsets = np.array([0.3, -0.3, 0.05, -0.05, 0.2, -0.1, 0.0, 0.1], dtype=np.float32)
    datum.inputs["logprobs"] = (lp - offsets).astype(np.float32)
    return datum


@pytest.mark.parametrize("name", sorted(set(LOSSES) - {"cross_entropy"}))
def test_null_engine_follows_the_advantage(null: NullEngine, name: str) -> None:
    """The null engine trains its one parameter with the registry's analytic gradient: a
    positive advantage raises the log-probabilities, a negative one lowers them."""
    for sign in (1.0, -1.0):
        model = uid()
        null.create_adapter(model, BASE, LoraSpec(rank=8, seed=1))
        datum = _datum(name, 0.0)
        before = null.forward_backward(model, [datum], name, {}, forward_only=True)
        lp = before.outputs[0]["logprobs"]
        datum.inputs["logprobs"] = lp.copy()
        datum.inputs["advantages"] = np.full(8, sign, dtype=np.float32)
        null.forward_backward(model, [datum], name, {}, forward_only=False)
        null.optim_step(model, AdamSpec(learning_rate=1e-3))
        after = null.forward_backward(model, [datum], name, {}, forward_only=True)
        assert sign * (after.outputs[0]["logprobs"].sum() - lp.sum()) > 0, (name, sign)
        null.drop_adapter(model)


BAD: list[tuple[str, str, dict[str, np.ndarray | None], dict[str, object], str]] = [
    ("unknown loss", "mse", {}, {}, "unknown loss function 'mse'"),
    ("custom refused", "custom", {}, {}, "custom_loss_server_side"),
    ("missing advantages", "gspo", {"advantages": None}, {}, "needs 'advantages'"),
    ("foreign input", "importance_sampling", {"weights": np.ones(8)}, {}, "unexpected key"),
    ("mask for ppo", "ppo", {"sequence_ratio_mask": np.ones(8)}, {}, "unexpected key"),
    ("unknown config", "stable_reinforce", {}, {"beta": 1.0}, "unknown key"),
    ("bad config type", "dro", {}, {"beta": "x"}, "expected a finite number"),
    ("short mask", "gspo", {"sequence_ratio_mask": np.ones(3)}, {}, "sequence_ratio_mask"),
]


@pytest.mark.parametrize(
    ("case", "name", "change", "config", "message"), BAD, ids=[case[0] for case in BAD]
)
def test_both_engines_reject_the_same_input(
    engine: TorchEngine,
    null: NullEngine,
    adapter: str,
    case: str,
    name: str,
    change: dict[str, np.ndarray | None],
    config: dict[str, object],
    message: str,
) -> None:
    del case
    messages = []
    for eng, model in ((engine, adapter), (null, "m")):
        datum = _datum("importance_sampling", 0.0)
        for key, value in change.items():
            if value is None:
                datum.inputs.pop(key)
            else:
                datum.inputs[key] = value.astype(np.float32)
        with pytest.raises(EngineUserError, match=message) as info:
            eng.forward_backward(model, [datum], name, config, forward_only=True)  # type: ignore[arg-type]
        messages.append(str(info.value))
    assert messages[0] == messages[1]
