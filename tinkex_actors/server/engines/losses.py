"""The loss registry: every forward_backward loss of the embedded server, in one table.

A :class:`LossSpec` holds a loss's name, the ``loss_fn_inputs`` it requires and accepts, its
``loss_fn_config`` keys with their defaults, and two functions of the per-token target
log-probabilities ``lp`` (``lp[t] = log p(target_tokens[t] | tokens[: t + 1])``):

* ``elementwise(ops, lp, inputs, config, mask)``: the per-token loss, written once against a
  small array interface (:class:`ArrayOps`) so the torch engine runs it on autograd tensors
  (stop-gradients are ``ops.stop``) and the null engine on numpy arrays;
* ``gradient(lp, inputs, config, mask)``: the analytic derivative of the summed loss by each
  ``lp[t]`` (numpy). The null engine trains with it; the tests check it against torch
  autograd of ``elementwise``.

``inputs`` always holds every input the loss takes (optional ones filled with their per-token
defaults, see :func:`input_defaults`); ``mask`` is 1 on real tokens and 0 on padding (rows of a
micro-batch are padded on the right). The HTTP layer (``server/validation.py``) and both
engines validate through :func:`loss_spec`, :func:`check_config` and :func:`prepare_datum`, so
a name, input or config key exists in exactly one place: adding a loss is one table entry plus
its two functions. The references each formula follows are in ``docs/server-engine.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from tinkex_actors.server.engine_api import EngineDatum, EngineUserError

__all__ = [
    "LOSSES",
    "NUMPY_OPS",
    "REFUSED_LOSSES",
    "ArrayOps",
    "LossSpec",
    "PreparedDatum",
    "check_config",
    "input_defaults",
    "loss_spec",
    "no_extra_checks",
    "prepare_datum",
]

_F64 = npt.NDArray[np.float64]


class ArrayOps(Protocol):
    """The array operations a loss formula uses (numpy or torch behind it)."""

    def exp(self, x: Any) -> Any:
        """Elementwise ``e ** x``."""
        ...

    def minimum(self, a: Any, b: Any) -> Any:
        """Elementwise minimum (``b`` may be a float)."""
        ...

    def clip(self, x: Any, low: Any, high: Any) -> Any:
        """``x`` limited to ``[low, high]`` (floats or arrays of ``x``'s shape)."""
        ...

    def stop(self, x: Any) -> Any:
        """``x`` without gradient (stop-gradient)."""
        ...

    def row_mean(self, x: Any, mask: Any) -> Any:
        """Per row (last axis), the mean of ``x`` where ``mask`` is non-zero, repeated along
        the row; 0 for a row whose mask is empty."""
        ...


class _NumpyOps:
    """:class:`ArrayOps` on numpy arrays (no gradients: ``stop`` is the identity)."""

    def exp(self, x: Any) -> Any:
        return np.exp(x)

    def minimum(self, a: Any, b: Any) -> Any:
        return np.minimum(a, b)

    def clip(self, x: Any, low: Any, high: Any) -> Any:
        return np.minimum(np.maximum(x, low), high)

    def stop(self, x: Any) -> Any:
        return x

    def row_mean(self, x: Any, mask: Any) -> Any:
        count = np.maximum(mask.sum(axis=-1, keepdims=True), 1.0)
        return np.broadcast_to((x * mask).sum(axis=-1, keepdims=True) / count, x.shape)


#: The numpy implementation of :class:`ArrayOps`.
NUMPY_OPS: ArrayOps = _NumpyOps()

Elementwise = Callable[[ArrayOps, Any, Mapping[str, Any], Mapping[str, float], Any], Any]
Gradient = Callable[[_F64, Mapping[str, _F64], Mapping[str, float], _F64], _F64]


def no_extra_checks(config: Mapping[str, float]) -> None:
    """The config check of losses whose keys only need to be finite numbers."""
    del config


@dataclass(frozen=True)
class LossSpec:
    """One loss: its inputs, config keys (with defaults) and formulas."""

    name: str
    #: Float inputs that must be given (``target_tokens`` is always required besides these).
    required: tuple[str, ...]
    #: Float inputs that may be given; missing ones take :func:`input_defaults`.
    optional: tuple[str, ...]
    #: ``loss_fn_config`` keys and their defaults.
    config: Mapping[str, float]
    elementwise: Elementwise
    gradient: Gradient
    #: Extra config checks (beyond "a finite number"), raising EngineUserError.
    check: Callable[[Mapping[str, float]], None] = no_extra_checks

    @property
    def inputs(self) -> tuple[str, ...]:
        """Every float input the loss takes, required first."""
        return (*self.required, *self.optional)


# ------------------------------------------------------------------------------ formulas
# Notation: lp = learner logprobs, q = sampler logprobs (input "logprobs"), A = advantages,
# ratio = exp(lp - q). Gradients are d(sum of the elementwise loss) / d lp[t].


def _ratio(ops: ArrayOps, lp: Any, inputs: Mapping[str, Any]) -> Any:
    return ops.exp(lp - inputs["logprobs"])


def _param(inputs: Mapping[str, Any], config: Mapping[str, float], key: str) -> Any:
    """The per-token input when the loss takes one, else the config's scalar."""
    value = inputs.get(key)
    return config[key] if value is None else value


def _ce(ops: ArrayOps, lp: Any, inputs: Mapping[str, Any], _c: Mapping[str, float], _m: Any) -> Any:
    return -lp * inputs["weights"]


def _ce_grad(_lp: _F64, inputs: Mapping[str, _F64], _c: Mapping[str, float], _m: _F64) -> _F64:
    return -inputs["weights"]


def _is(ops: ArrayOps, lp: Any, inputs: Mapping[str, Any], _c: Mapping[str, float], _m: Any) -> Any:
    return -_ratio(ops, lp, inputs) * inputs["advantages"]


def _is_grad(lp: _F64, inputs: Mapping[str, _F64], _c: Mapping[str, float], _m: _F64) -> _F64:
    return -np.exp(lp - inputs["logprobs"]) * inputs["advantages"]


def _bounds(inputs: Mapping[str, Any], config: Mapping[str, float]) -> tuple[Any, Any]:
    return (
        _param(inputs, config, "clip_low_threshold"),
        _param(inputs, config, "clip_high_threshold"),
    )


def _clipped_objective(
    ops: ArrayOps, ratio: Any, inputs: Mapping[str, Any], config: Mapping[str, float]
) -> Any:
    """``-min(ratio * A, clip(ratio, low, high) * A)`` (PPO's pessimistic bound)."""
    adv = inputs["advantages"]
    clipped = ops.clip(ratio, *_bounds(inputs, config))
    return -ops.minimum(ratio * adv, clipped * adv)


def _clipped_grad(ratio: _F64, inputs: Mapping[str, _F64], config: Mapping[str, float]) -> _F64:
    # Where the unclipped term is the minimum (ties included: then the ratio lies inside the
    # clip range and both terms move together) the gradient is -ratio * A; elsewhere the
    # clipped term is constant in lp and the token contributes nothing.
    adv = inputs["advantages"]
    unclipped = ratio * adv
    clipped = NUMPY_OPS.clip(ratio, *_bounds(inputs, config)) * adv
    out: _F64 = np.where(unclipped <= clipped, -unclipped, 0.0)
    return out


def _ppo(ops: ArrayOps, lp: Any, inputs: Mapping[str, Any], c: Mapping[str, float], _m: Any) -> Any:
    return _clipped_objective(ops, _ratio(ops, lp, inputs), inputs, c)


def _ppo_grad(lp: _F64, inputs: Mapping[str, _F64], c: Mapping[str, float], _m: _F64) -> _F64:
    return _clipped_grad(np.exp(lp - inputs["logprobs"]), inputs, c)


def _cispo(
    ops: ArrayOps, lp: Any, inputs: Mapping[str, Any], c: Mapping[str, float], _m: Any
) -> Any:
    weight = ops.clip(_ratio(ops, lp, inputs), *_bounds(inputs, c))
    return -ops.stop(weight) * inputs["advantages"] * lp


def _cispo_grad(lp: _F64, inputs: Mapping[str, _F64], c: Mapping[str, float], _m: _F64) -> _F64:
    weight: _F64 = NUMPY_OPS.clip(np.exp(lp - inputs["logprobs"]), *_bounds(inputs, c))
    return -weight * inputs["advantages"]


def _dro(ops: ArrayOps, lp: Any, inputs: Mapping[str, Any], c: Mapping[str, float], _m: Any) -> Any:
    return -inputs["advantages"] * lp + 0.5 * c["beta"] * (lp - inputs["logprobs"]) ** 2


def _dro_grad(lp: _F64, inputs: Mapping[str, _F64], c: Mapping[str, float], _m: _F64) -> _F64:
    return -inputs["advantages"] + c["beta"] * (lp - inputs["logprobs"])


def _gspo_ratio(ops: ArrayOps, lp: Any, inputs: Mapping[str, Any], mask: Any) -> Any:
    # GSPO-token: every token carries the value of the sequence ratio (the geometric mean of
    # the token ratios over the tokens sequence_ratio_mask marks) and the gradient of its own
    # log-probability.
    marked = mask * (inputs["sequence_ratio_mask"] != 0)
    log_seq_ratio = ops.row_mean(ops.stop(lp) - inputs["logprobs"], marked)
    return ops.exp(log_seq_ratio + lp - ops.stop(lp))


def _gspo(ops: ArrayOps, lp: Any, inputs: Mapping[str, Any], c: Mapping[str, float], m: Any) -> Any:
    return _clipped_objective(ops, _gspo_ratio(ops, lp, inputs, m), inputs, c)


def _gspo_grad(lp: _F64, inputs: Mapping[str, _F64], c: Mapping[str, float], mask: _F64) -> _F64:
    return _clipped_grad(_gspo_ratio(NUMPY_OPS, lp, inputs, mask), inputs, c)


def _stable(
    ops: ArrayOps, lp: Any, inputs: Mapping[str, Any], c: Mapping[str, float], _m: Any
) -> Any:
    weight = ops.stop(ops.minimum(_ratio(ops, lp, inputs), c["clip_high_threshold"]))
    penalty = 0.5 * c["kl_coeff"] * (lp - inputs["logprobs"]) ** 2
    return -weight * inputs["advantages"] * lp + penalty


def _stable_grad(lp: _F64, inputs: Mapping[str, _F64], c: Mapping[str, float], _m: _F64) -> _F64:
    weight = np.minimum(np.exp(lp - inputs["logprobs"]), c["clip_high_threshold"])
    return -weight * inputs["advantages"] + c["kl_coeff"] * (lp - inputs["logprobs"])


# ------------------------------------------------------------------------------ config checks
def _check_clip(config: Mapping[str, float]) -> None:
    low, high = config["clip_low_threshold"], config["clip_high_threshold"]
    if not 0 <= low <= high:
        raise EngineUserError(
            f"loss_fn_config: need 0 <= clip_low_threshold <= clip_high_threshold, "
            f"got {low} and {high}"
        )


def _check_non_negative(key: str) -> Callable[[Mapping[str, float]], None]:
    def check(config: Mapping[str, float]) -> None:
        if config[key] < 0:
            raise EngineUserError(f"loss_fn_config[{key!r}]: expected >= 0, got {config[key]}")

    return check


def _check_stable(config: Mapping[str, float]) -> None:
    _check_non_negative("kl_coeff")(config)
    if config["clip_high_threshold"] <= 0:
        raise EngineUserError(
            "loss_fn_config['clip_high_threshold']: expected > 0, got "
            f"{config['clip_high_threshold']}"
        )


# ------------------------------------------------------------------------------ the table
_RL = ("logprobs", "advantages")
_CLIP = ("clip_low_threshold", "clip_high_threshold")


def _spec(*entries: LossSpec) -> dict[str, LossSpec]:
    return {entry.name: entry for entry in entries}


#: Every loss this server computes, by name.
LOSSES: Mapping[str, LossSpec] = _spec(
    LossSpec("cross_entropy", (), ("weights",), {}, _ce, _ce_grad),
    LossSpec("importance_sampling", _RL, (), {}, _is, _is_grad),
    LossSpec(
        "ppo",
        _RL,
        _CLIP,
        {"clip_low_threshold": 0.8, "clip_high_threshold": 1.2},
        _ppo,
        _ppo_grad,
        _check_clip,
    ),
    LossSpec(
        "cispo",
        _RL,
        _CLIP,
        {"clip_low_threshold": 0.0, "clip_high_threshold": 4.0},
        _cispo,
        _cispo_grad,
        _check_clip,
    ),
    LossSpec("dro", _RL, (), {"beta": 1.0}, _dro, _dro_grad, _check_non_negative("beta")),
    LossSpec(
        "gspo",
        _RL,
        ("sequence_ratio_mask",),
        # The GSPO paper's clipping ranges (eps_low 3e-4, eps_high 4e-4): a sequence ratio is
        # a geometric mean over many tokens and stays far closer to 1 than a token ratio.
        {"clip_low_threshold": 1 - 3e-4, "clip_high_threshold": 1 + 4e-4},
        _gspo,
        _gspo_grad,
        _check_clip,
    ),
    LossSpec(
        "stable_reinforce",
        _RL,
        (),
        {"kl_coeff": 0.0, "clip_high_threshold": 2.0},
        _stable,
        _stable_grad,
        _check_stable,
    ),
)

#: Loss names of the protocol this server refuses, and why.
REFUSED_LOSSES: Mapping[str, str] = {
    "custom": (
        "loss_fn: 'custom' runs a server-side custom loss (create_custom_loss, gated by the "
        "custom_loss_server_side flag), which this server does not offer; compute custom losses "
        "client-side (forward_backward_custom)"
    ),
}


def loss_spec(name: str) -> LossSpec:
    """The registry entry of ``name``; EngineUserError naming the known losses otherwise."""
    spec = LOSSES.get(name)
    if spec is not None:
        return spec
    refused = REFUSED_LOSSES.get(name)
    if refused is not None:
        raise EngineUserError(refused)
    raise EngineUserError(
        f"loss_fn: unknown loss function {name!r}; known losses: {', '.join(LOSSES)}"
    )


def check_config(
    spec: LossSpec, config: Mapping[str, object], text: Mapping[str, str] | None = None
) -> dict[str, float]:
    """``loss_fn_config`` with defaults filled in; rejects unknown keys and bad values.

    ``text`` holds string-valued entries (0.38's ``loss_fn_config_v2``); no built-in loss
    takes one, so a known key given as a string is a type error and any other an unknown key.
    """
    given: dict[str, object] = {**dict(text or {}), **dict(config)}
    unknown = sorted(set(given) - set(spec.config))
    if unknown:
        allowed = ", ".join(sorted(spec.config)) or "none"
        raise EngineUserError(
            f"loss_fn_config: unknown key(s) {unknown} for loss {spec.name!r} (allowed: {allowed})"
        )
    values = dict(spec.config)
    for key, value in given.items():
        # Decoded JSON may hold anything, whatever the annotation says.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise EngineUserError(
                f"loss_fn_config[{key!r}]: expected a finite number, got "
                f"{type(value).__name__} {value!r}"
            )
        if not math.isfinite(value):
            raise EngineUserError(f"loss_fn_config[{key!r}]: expected a finite number, got {value}")
        values[key] = float(value)
    spec.check(values)
    return values


def input_defaults(spec: LossSpec, config: Mapping[str, float]) -> dict[str, float]:
    """Per-token value of each optional input a datum leaves out; the engines fill every
    optional input with it before calling the formulas.

    ``weights`` and ``sequence_ratio_mask`` default to 1 (every token counts); per-token clip
    thresholds default to the config's (which the config in turn defaults, see the table).
    """
    return {key: config.get(key, 1.0) for key in spec.optional}


@dataclass
class PreparedDatum:
    """A validated datum: input tokens, targets and float inputs, all of length ``T``."""

    tokens: npt.NDArray[np.int64]
    targets: npt.NDArray[np.int64]
    inputs: dict[str, npt.NDArray[np.float32]]


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
            f"data[{index}].loss_fn_inputs[{key!r}]: length {array.shape[0]} does not match "
            f"the {length} model input tokens (one value per token)"
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
    index: int, datum: EngineDatum, spec: LossSpec, vocab_size: int, max_length: int
) -> PreparedDatum:
    """Validate one datum for ``spec`` against the base model's vocabulary and context."""
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
    allowed = {"target_tokens", *spec.inputs}
    unknown = sorted(set(datum.inputs) - allowed)
    if unknown:
        raise EngineUserError(
            f"data[{index}].loss_fn_inputs: unexpected key(s) {unknown} for loss {spec.name!r} "
            f"(allowed: {sorted(allowed)})"
        )
    for key in ("target_tokens", *spec.required):
        if key not in datum.inputs:
            raise EngineUserError(f"data[{index}].loss_fn_inputs: loss {spec.name!r} needs {key!r}")
    targets = _vector(index, "target_tokens", datum.inputs["target_tokens"], length)
    targets = _check_ids(f"data[{index}].loss_fn_inputs['target_tokens']", targets, vocab_size)
    inputs: dict[str, npt.NDArray[np.float32]] = {}
    for key in spec.inputs:
        if key not in datum.inputs:
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
