"""forward_backward_custom's loss side: the data it sends and the user's loss on torch tensors.

A custom loss ``loss_fn(data, logprobs) -> (loss, metrics)`` is any differentiable function
of the per-token log-probabilities of each datum's ``target_tokens``. The server never sees
it: phase 1 computes the logprobs (a forward-only ``cross_entropy`` pass), the loss runs
here on torch tensors that require grad, and phase 2 is a ``cross_entropy`` pass with
``weights = -dloss/dlogprobs``. Cross-entropy is ``-sum(weights * logprobs)``, so its
gradient by the model's parameters is exactly the custom loss's (the chain rule through the
logprobs). The orchestration (seq_ids, phases, fillers) is ``actors/_custom_flow.py``.

torch is an optional dependency (extra ``custom-loss``); it is imported on first use.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeAlias

from tinkex_actors.actors._custom_flow import CustomLossResult
from tinkex_actors.errors import MissingDependencyError, ResponseDecodeError, ValidationError
from tinkex_actors.types import Datum, ForwardBackwardOutput, TensorData

__all__ = ["CustomLossFn", "compute_custom_loss", "custom_phase1_data", "require_torch"]

#: ``loss_fn(data, logprobs) -> (loss, metrics)``: ``data`` the datums as given (every
#: ``loss_fn_inputs`` key, sent or not), ``logprobs`` one float32 tensor per datum, shaped
#: like its ``target_tokens``; ``loss`` a scalar tensor computed from them, ``metrics``
#: ``{name: number}``.
CustomLossFn: TypeAlias = Callable[[list[Datum], list[Any]], tuple[Any, Mapping[str, float]]]

_FIELD = "loss_fn"


def require_torch() -> Any:
    """The torch module.

    Raises:
        MissingDependencyError: torch is not installed (names the ``custom-loss`` extra).
    """
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError(
            "forward_backward_custom runs the loss function on torch tensors, and PyTorch is "
            "not installed: pip install 'tinkex_actors[custom-loss]'"
        ) from exc
    return torch


def custom_phase1_data(data: Iterable[Datum]) -> tuple[list[Datum], list[Datum]]:
    """Check a custom-loss batch; returns ``(the datums, phase 1's datums)``.

    Phase 1's datums keep each datum's model input, ``target_tokens`` and ``weights`` (zeros
    when absent); the other ``loss_fn_inputs`` stay on the client, for the loss function.

    Raises:
        ValidationError: not a non-empty list of Datum, or a datum without target_tokens.
    """
    raw: object = data
    if isinstance(raw, Datum | str | bytes | Mapping) or not isinstance(raw, Iterable):
        raise ValidationError(f"expected a list of Datum, got {type(raw).__name__}", field="data")
    items = list(data)
    if not items:
        raise ValidationError("expected at least one Datum, got an empty list", field="data")
    phase1: list[Datum] = []
    for i, datum in enumerate(items):
        if not isinstance(datum, Datum):
            raise ValidationError(f"expected Datum, got {type(datum).__name__}", field=f"data[{i}]")
        targets = datum.loss_fn_inputs.get("target_tokens")
        if targets is None:
            raise ValidationError(
                "forward_backward_custom needs target_tokens in every datum: the loss "
                "function receives their log-probabilities",
                field=f"data[{i}].loss_fn_inputs.target_tokens",
            )
        weights = datum.loss_fn_inputs.get("weights")
        if weights is None:
            weights = TensorData.from_bytes(bytes(4 * targets.size), "float32", targets.shape)
        phase1.append(
            Datum(
                datum.model_input,
                {"target_tokens": targets, "weights": weights},
                model_input_spans=datum.model_input_spans,
                loss_fn_input_spans=datum.loss_fn_input_spans,
            )
        )
    return items, phase1


def _logprob_leaves(torch: Any, data: Sequence[Datum], output: ForwardBackwardOutput) -> list[Any]:
    outputs = output.loss_fn_outputs
    if len(outputs) != len(data):
        raise ResponseDecodeError(
            f"the forward pass returned {len(outputs)} outputs for {len(data)} datums",
            expected="one loss_fn_outputs entry per datum",
        )
    leaves = []
    for i, (datum, out) in enumerate(zip(data, outputs, strict=True)):
        logprobs = out.get("logprobs")
        targets = datum.loss_fn_inputs["target_tokens"]
        if logprobs is None or logprobs.size != targets.size:
            got = "none" if logprobs is None else f"{logprobs.size}"
            raise ResponseDecodeError(
                f"the forward pass returned {got} logprobs for datum {i}, which has "
                f"{targets.size} target tokens",
                expected="loss_fn_outputs[i]['logprobs'] with one value per target token",
            )
        leaf = torch.tensor(logprobs.data, dtype=torch.float32).reshape(targets.dense_shape)
        leaves.append(leaf.requires_grad_(True))
    return leaves


def _unpack(torch: Any, answer: object) -> tuple[Any, dict[str, float]]:
    if not isinstance(answer, tuple | list) or len(answer) != 2:
        raise ValidationError(
            f"loss_fn must return (loss, metrics), got {type(answer).__name__}", field=_FIELD
        )
    loss, metrics = answer
    if not isinstance(loss, torch.Tensor):
        raise ValidationError(
            f"loss_fn returned a {type(loss).__name__} as the loss; expected a scalar "
            "torch.Tensor computed from the logprobs",
            field=_FIELD,
        )
    if loss.numel() != 1:
        raise ValidationError(
            f"loss_fn returned a non-scalar loss of shape {tuple(loss.shape)}; reduce it to "
            "one value (e.g. .sum() or .mean())",
            field=_FIELD,
        )
    if not loss.requires_grad:
        raise ValidationError(
            "loss_fn returned a loss tensor without grad: compute it from the logprobs "
            "tensors with torch operations (no .detach(), .item() or torch.no_grad())",
            field=_FIELD,
        )
    if not isinstance(metrics, Mapping):
        raise ValidationError(
            f"loss_fn returned {type(metrics).__name__} as the metrics; expected a mapping "
            "of name to number",
            field=_FIELD,
        )
    numbers: dict[str, float] = {}
    for key, value in metrics.items():
        try:
            if not isinstance(key, str):
                raise TypeError(f"key {key!r} is not a str")
            numbers[key] = float(value)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValidationError(
                f"metric {key!r} is not a number ({exc})", field=f"{_FIELD}.metrics"
            ) from None
    return loss, numbers


def compute_custom_loss(
    loss_fn: CustomLossFn, data: list[Datum], output: ForwardBackwardOutput
) -> CustomLossResult:
    """Run ``loss_fn`` on phase 1's logprobs and differentiate it: phase 2's datums.

    An exception ``loss_fn`` raises propagates unchanged.

    Raises:
        ValidationError: ``loss_fn`` returned something other than ``(scalar tensor with
            grad, {name: number})``, or its gradients are of the wrong shape or not finite.
        ResponseDecodeError: phase 1's output does not match the data.
    """
    torch = require_torch()
    leaves = _logprob_leaves(torch, data, output)
    loss, metrics = _unpack(torch, loss_fn(list(data), list(leaves)))
    value = float(loss.detach().sum())
    try:
        loss.backward()
    except RuntimeError as exc:
        raise ValidationError(
            f"the backward pass through the loss failed: {exc}", field=_FIELD
        ) from exc
    phase2: list[Datum] = []
    for i, (datum, leaf) in enumerate(zip(data, leaves, strict=True)):
        # A logprob the loss does not read has no gradient: weight 0.
        grad = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
        if tuple(grad.shape) != tuple(leaf.shape):
            raise ValidationError(
                f"the gradient by logprobs[{i}] has shape {tuple(grad.shape)}, expected "
                f"{tuple(leaf.shape)} (the shape of data[{i}]'s target_tokens)",
                field=_FIELD,
            )
        weights = (-grad.detach().to(torch.float32)).reshape(-1).tolist()
        if not all(math.isfinite(w) for w in weights):
            raise ValidationError(
                f"the gradient by logprobs[{i}] is not finite (NaN or inf)", field=_FIELD
            )
        targets = datum.loss_fn_inputs["target_tokens"]
        phase2.append(
            Datum(
                datum.model_input,
                {
                    "target_tokens": targets,
                    "weights": TensorData.from_list(weights, "float32", targets.dense_shape),
                },
                model_input_spans=datum.model_input_spans,
                loss_fn_input_spans=datum.loss_fn_input_spans,
            )
        )
    return CustomLossResult(data=phase2, loss=value, metrics=metrics)
