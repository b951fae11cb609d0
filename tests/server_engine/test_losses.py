"""The loss registry: the official names, analytic gradients against torch autograd, clipping
at the thresholds, config validation, and the registry being the one list of loss names."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pytest
import torch
from tinker.types.loss_fn_type import LossFnType as OfficialLossFnType

import tinkex_actors
from tinkex_actors.server.engine_api import EngineUserError
from tinkex_actors.server.engines.losses import (
    LOSSES,
    NUMPY_OPS,
    REFUSED_LOSSES,
    LossSpec,
    check_config,
    input_defaults,
    loss_spec,
)
from tinkex_actors.server.engines.torch._losses import TORCH_OPS

pytestmark = pytest.mark.torch

ROWS, WIDTH = 3, 7
#: Real tokens per row (the rest is right padding, as in the torch engine's micro-batches).
LENGTHS = (7, 5, 2)


def _mask() -> np.ndarray:
    mask = np.zeros((ROWS, WIDTH))
    for row, length in enumerate(LENGTHS):
        mask[row, :length] = 1.0
    return mask


def _inputs(spec: LossSpec, config: Mapping[str, float], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    values: dict[str, np.ndarray] = {}
    for key, default in {
        **dict.fromkeys(spec.required, 0.0),
        **input_defaults(spec, config),
    }.items():
        values[key] = np.full((ROWS, WIDTH), default)
    if "logprobs" in values:
        values["logprobs"] = -rng.uniform(0.2, 3.0, (ROWS, WIDTH))
    if "advantages" in values:
        values["advantages"] = rng.normal(0.0, 1.0, (ROWS, WIDTH))
    if "weights" in values:
        values["weights"] = rng.uniform(0.0, 2.0, (ROWS, WIDTH))
    if "sequence_ratio_mask" in values:
        values["sequence_ratio_mask"] = (rng.random((ROWS, WIDTH)) < 0.7).astype(np.float64)
    return values


def _autograd(
    spec: LossSpec,
    lp: np.ndarray,
    inputs: Mapping[str, np.ndarray],
    config: Mapping[str, float],
    mask: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(elementwise loss, d sum(loss) / d lp) by torch autograd, padding masked out."""
    lp_t = torch.tensor(lp, dtype=torch.float64, requires_grad=True)
    tensors = {key: torch.tensor(value, dtype=torch.float64) for key, value in inputs.items()}
    valid = torch.tensor(mask, dtype=torch.bool)
    loss = torch.where(valid, spec.elementwise(TORCH_OPS, lp_t, tensors, config, valid), 0.0)
    loss.sum().backward()
    assert lp_t.grad is not None
    return loss.detach().numpy(), lp_t.grad.numpy()


#: Non-default configs that move the thresholds around.
CONFIGS: dict[str, list[dict[str, float]]] = {
    "cross_entropy": [{}],
    "importance_sampling": [{}],
    "ppo": [{}, {"clip_low_threshold": 0.5, "clip_high_threshold": 1.5}],
    "cispo": [{}, {"clip_low_threshold": 0.9, "clip_high_threshold": 1.1}],
    "dro": [{}, {"beta": 0.05}],
    "gspo": [{}, {"clip_low_threshold": 0.7, "clip_high_threshold": 1.3}],
    "stable_reinforce": [{}, {"kl_coeff": 0.5, "clip_high_threshold": 1.1}],
}


def test_registry_names_match_the_official_sdk() -> None:
    official = set(get_args(OfficialLossFnType))
    assert set(LOSSES) | set(REFUSED_LOSSES) == official
    assert set(CONFIGS) == set(LOSSES)
    assert not set(LOSSES) & set(REFUSED_LOSSES)


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_analytic_gradient_matches_autograd(name: str, seed: int) -> None:
    spec = LOSSES[name]
    mask = _mask()
    for given in CONFIGS[name]:
        config = check_config(spec, given)
        inputs = _inputs(spec, config, seed)
        rng = np.random.default_rng(100 + seed)
        # Learner logprobs near the sampler's so the ratios straddle the clip thresholds.
        base = inputs.get("logprobs", -rng.uniform(0.2, 3.0, (ROWS, WIDTH)))
        lp = base + rng.normal(0.0, 0.4, (ROWS, WIDTH))
        loss, grad = _autograd(spec, lp, inputs, config, mask)
        analytic = spec.gradient(lp, inputs, config, mask) * mask
        np.testing.assert_allclose(grad, analytic, rtol=1e-9, atol=1e-12)
        # The numpy formula (null engine) gives the torch values (torch engine).
        values = spec.elementwise(NUMPY_OPS, lp, inputs, config, mask) * mask
        np.testing.assert_allclose(loss, values, rtol=1e-12, atol=1e-12)
        assert np.any(grad != 0)


def _one_token(
    name: str, ratio: float, advantage: float, *, kink: bool = False, **config: float
) -> tuple[float, float]:
    """(loss, d loss / d lp) of a single token whose importance ratio is ``ratio``; the
    analytic gradient must match autograd's except at a ``kink`` (exactly at a threshold)."""
    spec = LOSSES[name]
    full = check_config(spec, config)
    inputs = {
        key: np.full((1, 1), value)
        for key, value in {
            **dict.fromkeys(spec.required, 0.0),
            **input_defaults(spec, full),
        }.items()
    }
    inputs["logprobs"] = np.full((1, 1), -1.0)
    inputs["advantages"] = np.full((1, 1), advantage)
    lp = np.full((1, 1), -1.0 + np.log(ratio))
    loss, grad = _autograd(spec, lp, inputs, full, np.ones((1, 1)))
    analytic = spec.gradient(lp, inputs, full, np.ones((1, 1)))
    if not kink:
        np.testing.assert_allclose(grad, analytic, rtol=1e-9)
    return float(loss[0, 0]), float(analytic[0, 0])


@pytest.mark.parametrize("name", ["ppo", "gspo"])
def test_ppo_style_clipping_at_the_thresholds(name: str) -> None:
    low, high = 0.8, 1.2
    cfg = {"clip_low_threshold": low, "clip_high_threshold": high}
    eps = 1e-6
    # Positive advantage: past the upper threshold the clipped branch wins and has no gradient.
    loss, grad = _one_token(name, high + eps, 1.0, **cfg)
    assert loss == pytest.approx(-high)
    assert grad == 0.0
    loss, grad = _one_token(name, high - eps, 1.0, **cfg)
    assert loss == pytest.approx(-(high - eps))
    assert grad == pytest.approx(-(high - eps))
    # At the threshold itself both branches agree (a kink: autograd splits its gradient between
    # them); the registry keeps the ratio term's gradient, the one from below.
    loss, grad = _one_token(name, high, 1.0, kink=True, **cfg)
    assert loss == pytest.approx(-high)
    assert grad == pytest.approx(-high)
    # Below the lower threshold a positive advantage is not clipped (min picks the ratio).
    _, grad = _one_token(name, low - 0.1, 1.0, **cfg)
    assert grad == pytest.approx(-(low - 0.1))
    # Negative advantage: clipped below the lower threshold, free above the upper one.
    loss, grad = _one_token(name, low - eps, -1.0, **cfg)
    assert loss == pytest.approx(low)
    assert grad == 0.0
    _, grad = _one_token(name, low + eps, -1.0, **cfg)
    assert grad == pytest.approx(low + eps)
    _, grad = _one_token(name, high + 0.5, -1.0, **cfg)
    assert grad == pytest.approx(high + 0.5)


def test_cispo_clips_the_weight_but_never_drops_the_token() -> None:
    cfg = {"clip_low_threshold": 0.5, "clip_high_threshold": 2.0}
    for ratio, weight in ((3.0, 2.0), (2.0, 2.0), (1.3, 1.3), (0.5, 0.5), (0.1, 0.5)):
        loss, grad = _one_token("cispo", ratio, 1.0, **cfg)
        assert grad == pytest.approx(-weight)
        lp = -1.0 + np.log(ratio)
        assert loss == pytest.approx(-weight * lp)


def test_stable_reinforce_caps_the_weight_and_adds_the_penalty() -> None:
    _, grad = _one_token("stable_reinforce", 3.0, 1.0, clip_high_threshold=2.0)
    assert grad == pytest.approx(-2.0)
    _, grad = _one_token("stable_reinforce", 1.5, 1.0, clip_high_threshold=2.0)
    assert grad == pytest.approx(-1.5)
    _, grad = _one_token("stable_reinforce", np.e, 0.0, kl_coeff=0.5)
    assert grad == pytest.approx(0.5 * 1.0)  # kl_coeff * (lp - q), lp - q = 1


def test_gspo_uses_one_sequence_ratio_over_the_marked_tokens() -> None:
    spec = LOSSES["gspo"]
    config = check_config(spec, {"clip_low_threshold": 0.0, "clip_high_threshold": 100.0})
    q = np.full((1, 4), -1.0)
    lp = q + np.array([[0.3, -0.1, 2.0, 5.0]])
    adv = np.ones((1, 4))
    mark = np.array([[1.0, 1.0, 0.0, 0.0]])  # only the first two tokens set the ratio
    inputs = {"logprobs": q, "advantages": adv, "sequence_ratio_mask": mark}
    loss, grad = _autograd(spec, lp, inputs, config, np.ones((1, 4)))
    ratio = np.exp((0.3 - 0.1) / 2)
    np.testing.assert_allclose(loss, -ratio * adv)
    np.testing.assert_allclose(grad, -ratio * adv)
    # Nothing marked: the sequence ratio is 1.
    inputs["sequence_ratio_mask"] = np.zeros((1, 4))
    loss, _ = _autograd(spec, lp, inputs, config, np.ones((1, 4)))
    np.testing.assert_allclose(loss, -adv)
    # Padding never enters the ratio.
    inputs["sequence_ratio_mask"] = np.ones((1, 4))
    loss, _ = _autograd(spec, lp, inputs, config, np.array([[1.0, 1.0, 0.0, 0.0]]))
    np.testing.assert_allclose(loss[0, :2], -np.exp(0.1) * adv[0, :2])


@pytest.mark.parametrize(
    ("name", "config", "text", "message"),
    [
        ("cross_entropy", {"beta": 1.0}, None, r"unknown key\(s\) \['beta'\].*allowed: none"),
        ("ppo", {"clip_hi": 1.0}, None, r"'clip_hi'.*allowed: clip_high_threshold"),
        ("dro", {"beta": "big"}, None, r"loss_fn_config\['beta'\]: expected a finite number"),
        ("dro", {"beta": True}, None, r"\['beta'\]: expected a finite number, got bool"),
        ("dro", {}, {"beta": "1"}, r"\['beta'\]: expected a finite number, got str"),
        ("cispo", {"clip_high_threshold": float("nan")}, None, "finite"),
        ("ppo", {"clip_low_threshold": 1.5}, None, "clip_low_threshold <= clip_high_threshold"),
        ("gspo", {"clip_low_threshold": -0.1}, None, "0 <= clip_low_threshold"),
        ("dro", {"beta": -1.0}, None, r"\['beta'\]: expected >= 0"),
        ("stable_reinforce", {"kl_coeff": -1.0}, None, "kl_coeff"),
        ("stable_reinforce", {"clip_high_threshold": 0.0}, None, "clip_high_threshold"),
        ("ppo", {}, {"loss_id": "x"}, r"unknown key\(s\) \['loss_id'\]"),
    ],
)
def test_bad_config_is_named(
    name: str, config: dict[str, Any], text: dict[str, str] | None, message: str
) -> None:
    with pytest.raises(EngineUserError, match=message):
        check_config(LOSSES[name], config, text)


def test_config_defaults_and_names() -> None:
    assert check_config(LOSSES["ppo"], {}) == {
        "clip_low_threshold": 0.8,
        "clip_high_threshold": 1.2,
    }
    assert check_config(LOSSES["cispo"], {"clip_high_threshold": 5}) == {
        "clip_low_threshold": 0.0,
        "clip_high_threshold": 5.0,
    }
    assert check_config(LOSSES["dro"], {}) == {"beta": 1.0}
    with pytest.raises(EngineUserError, match="unknown loss function 'mse'") as info:
        loss_spec("mse")
    for name in LOSSES:
        assert name in str(info.value)
    with pytest.raises(EngineUserError, match="custom_loss_server_side"):
        loss_spec("custom")


def test_the_registry_is_the_only_list_of_loss_names() -> None:
    """Outside the registry, a loss name appears only in the SDK's type alias (for typing)."""
    root = Path(tinkex_actors.__file__).parent
    allowed = {root / "server/engines/losses.py", root / "types/_training.py"}
    pattern = re.compile(r"[\"'](importance_sampling|cispo|gspo|stable_reinforce)[\"']")
    found = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if path not in allowed and pattern.search(path.read_text())
    ]
    assert found == []
