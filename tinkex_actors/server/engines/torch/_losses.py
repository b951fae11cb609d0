"""Loss functions of forward_backward, and the validation of their inputs.

Every loss is a sum over target positions ``t`` of an elementwise term built from
``lp[t]`` = log p(target_tokens[t] | tokens[: t + 1]) under the adapter being trained
(Tinker's convention: ``tokens`` and ``target_tokens`` have the same length; ``target_tokens`` is
usually ``tokens`` shifted left by one). With ``ratio = exp(lp - logprobs)`` where ``logprobs`` are
the sampler's log-probabilities and ``A`` the ``advantages``:

* ``cross_entropy``: ``-lp * weights`` (``weights`` default to 1);
* ``importance_sampling``: ``-ratio * A``;
* ``ppo``: ``-min(ratio * A, clip(ratio, low, high) * A)`` (``clip_low_threshold`` /
  ``clip_high_threshold``, default 0.8 / 1.2, from loss_fn_config or per token from
  loss_fn_inputs);
* ``cispo``: ``-stop_gradient(clip(ratio, low, high)) * A * lp`` (defaults 0.0 / 4.0);
* ``dro``: ``-A * lp + beta / 2 * (lp - logprobs) ** 2`` (``beta`` from loss_fn_config, default
  1): a policy-gradient term plus a quadratic penalty that keeps the policy near the sampler.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from tinkex_actors._constants import (
    CISPO_CLIP_HIGH,
    CISPO_CLIP_LOW,
    DRO_BETA,
    PPO_CLIP_HIGH,
    PPO_CLIP_LOW,
)
from tinkex_actors.server.engine_api import EngineDatum, EngineUserError

__all__ = ["LOSSES", "PreparedDatum", "check_config", "elementwise_loss", "prepare_datum"]

_RL_INPUTS = ("logprobs", "advantages")
_CLIP_INPUTS = ("clip_low_threshold", "clip_high_threshold")


@dataclass(frozen=True)
class _LossSpec:
    required: tuple[str, ...]
    optional: tuple[str, ...]
    config: Mapping[str, float]


#: Loss name -> float inputs it needs / accepts (besides target_tokens) and config defaults.
LOSSES: Mapping[str, _LossSpec] = {
    "cross_entropy": _LossSpec((), ("weights",), {}),
    "importance_sampling": _LossSpec(_RL_INPUTS, (), {}),
    "ppo": _LossSpec(
        _RL_INPUTS,
        _CLIP_INPUTS,
        {"clip_low_threshold": PPO_CLIP_LOW, "clip_high_threshold": PPO_CLIP_HIGH},
    ),
    "cispo": _LossSpec(
        _RL_INPUTS,
        _CLIP_INPUTS,
        {"clip_low_threshold": CISPO_CLIP_LOW, "clip_high_threshold": CISPO_CLIP_HIGH},
    ),
    "dro": _LossSpec(_RL_INPUTS, (), {"beta": DRO_BETA}),
}


@dataclass
class PreparedDatum:
    """A validated datum: input tokens, targets and float inputs, all of length ``T``."""

    tokens: npt.NDArray[np.int64]
    targets: npt.NDArray[np.int64]
    inputs: dict[str, npt.NDArray[np.float32]]


def check_config(loss_fn: str, config: Mapping[str, float]) -> dict[str, float]:
    """The loss's config with defaults filled in; rejects unknown losses, keys and values."""
    spec = LOSSES.get(loss_fn)
    if spec is None:
        raise EngineUserError(
            f"unknown loss function {loss_fn!r}; expected one of {sorted(LOSSES)}"
        )
    unknown = sorted(set(config) - set(spec.config))
    if unknown:
        allowed = sorted(spec.config) or "none"
        raise EngineUserError(
            f"loss_fn_config: unknown key(s) {unknown} for {loss_fn!r} (allowed: {allowed})"
        )
    values = dict(spec.config)
    for key, raw in config.items():
        value: object = raw  # decoded JSON: may hold anything despite the annotation
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise EngineUserError(
                f"loss_fn_config[{key!r}]: expected a finite number, got {value!r}"
            )
        values[key] = float(value)
    if "clip_low_threshold" in values:
        low, high = values["clip_low_threshold"], values["clip_high_threshold"]
        if not 0 <= low <= high:
            raise EngineUserError(
                f"loss_fn_config: need 0 <= clip_low_threshold <= clip_high_threshold, "
                f"got {low} and {high}"
            )
    if values.get("beta", 0.0) < 0:
        raise EngineUserError(f"loss_fn_config['beta']: expected >= 0, got {values['beta']}")
    return values


def _vector(index: int, key: str, value: Any, length: int) -> npt.NDArray[Any]:
    array = np.asarray(value)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise EngineUserError(
            f"data[{index}].loss_fn_inputs[{key!r}]: expected shape [{length}], "
            f"got {list(array.shape)}"
        )
    if array.shape[0] != length:
        raise EngineUserError(
            f"data[{index}].loss_fn_inputs[{key!r}]: expected {length} values (one per model "
            f"input token), got {array.shape[0]}"
        )
    return array


def _check_ids(label: str, ids: npt.NDArray[Any], vocab_size: int) -> npt.NDArray[np.int64]:
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise EngineUserError(f"{label}: expected integer token ids, got {ids.dtype}")
    ids = ids.astype(np.int64, copy=False)
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        bad = int(ids[(ids < 0) | (ids >= vocab_size)][0])
        raise EngineUserError(
            f"{label}: token id {bad} is outside the vocabulary [0, {vocab_size})"
        )
    return ids


def prepare_datum(
    index: int, datum: EngineDatum, loss_fn: str, vocab_size: int, max_length: int
) -> PreparedDatum:
    """Validate one datum for ``loss_fn`` (known to exist) against the base model's limits."""
    spec = LOSSES[loss_fn]
    tokens = np.asarray(datum.tokens)
    if tokens.ndim != 1 or tokens.shape[0] == 0:
        raise EngineUserError(f"data[{index}].model_input: expected at least one token")
    length = int(tokens.shape[0])
    if length > max_length:
        raise EngineUserError(
            f"data[{index}].model_input: {length} tokens exceed the model's context length "
            f"{max_length}"
        )
    tokens = _check_ids(f"data[{index}].model_input", tokens, vocab_size)
    allowed = {"target_tokens", *spec.required, *spec.optional}
    unknown = sorted(set(datum.inputs) - allowed)
    if unknown:
        raise EngineUserError(
            f"data[{index}].loss_fn_inputs: unexpected key(s) {unknown} for loss {loss_fn!r} "
            f"(allowed: {sorted(allowed)})"
        )
    if "target_tokens" not in datum.inputs:
        raise EngineUserError(
            f"data[{index}].loss_fn_inputs: loss {loss_fn!r} needs 'target_tokens'"
        )
    targets = _vector(index, "target_tokens", datum.inputs["target_tokens"], length)
    targets = _check_ids(f"data[{index}].loss_fn_inputs['target_tokens']", targets, vocab_size)
    inputs: dict[str, npt.NDArray[np.float32]] = {}
    for key in (*spec.required, *spec.optional):
        if key not in datum.inputs:
            if key in spec.required:
                raise EngineUserError(
                    f"data[{index}].loss_fn_inputs: loss {loss_fn!r} needs {key!r}"
                )
            continue
        values = _vector(index, key, datum.inputs[key], length)
        if not (
            np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.integer)
        ):
            raise EngineUserError(f"data[{index}].loss_fn_inputs[{key!r}]: expected numbers")
        values = values.astype(np.float32)
        if not np.isfinite(values).all():
            raise EngineUserError(f"data[{index}].loss_fn_inputs[{key!r}]: values must be finite")
        inputs[key] = values
    return PreparedDatum(tokens=tokens, targets=targets, inputs=inputs)


def elementwise_loss(
    loss_fn: str, lp: Any, inputs: Mapping[str, Any], config: Mapping[str, float]
) -> Any:
    """Per-token loss (same shape as ``lp``); ``inputs`` hold tensors shaped like ``lp``."""
    if loss_fn == "cross_entropy":
        weights = inputs.get("weights")
        return -lp if weights is None else -lp * weights
    advantages = inputs["advantages"]
    sampler = inputs["logprobs"]
    if loss_fn == "dro":
        return -advantages * lp + 0.5 * config["beta"] * (lp - sampler) ** 2
    ratio = torch.exp(lp - sampler)
    if loss_fn == "importance_sampling":
        return -ratio * advantages
    low = inputs.get("clip_low_threshold", config["clip_low_threshold"])
    high = inputs.get("clip_high_threshold", config["clip_high_threshold"])
    clipped = _clamp(ratio, low, high)
    if loss_fn == "ppo":
        return -torch.minimum(ratio * advantages, clipped * advantages)
    if loss_fn == "cispo":
        return -clipped.detach() * advantages * lp
    raise EngineUserError(f"unknown loss function {loss_fn!r}")


def _clamp(x: Any, low: Any, high: Any) -> Any:
    if isinstance(low, float) and isinstance(high, float):
        return torch.clamp(x, low, high)
    low_t = low if torch.is_tensor(low) else torch.full_like(x, float(low))
    high_t = high if torch.is_tensor(high) else torch.full_like(x, float(high))
    return torch.minimum(torch.maximum(x, low_t), high_t)
