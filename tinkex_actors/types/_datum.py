"""Datum: one training example, and the provenance spans newer servers accept with it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias, cast

import attrs

from tinkex_actors._constants import LOSS_INPUT_DTYPES
from tinkex_actors.errors import ValidationError
from tinkex_actors.types import _packed
from tinkex_actors.types import _validate as v
from tinkex_actors.types._model_input import ModelInput
from tinkex_actors.types._tensor import TensorData, TensorDtype

__all__ = [
    "Datum",
    "LossFnInputs",
    "PromptProvenanceSpan",
    "ProvenanceSpan",
    "SampledProvenanceSpan",
]

LossFnInputs: TypeAlias = Mapping[str, TensorData]


@attrs.frozen(kw_only=True)
class PromptProvenanceSpan:
    """Datum positions that were positions ``[offset, offset + length)`` of a sample's prompt."""

    sequence_id: str = attrs.field(validator=v.str_field(nonempty=True))
    offset: int = attrs.field(default=0, validator=v.int_field(minimum=0))
    length: int = attrs.field(validator=v.int_field(minimum=0))


@attrs.frozen(kw_only=True)
class SampledProvenanceSpan:
    """Datum positions that were positions ``[offset, offset + length)`` of sampled tokens."""

    sequence_id: str = attrs.field(validator=v.str_field(nonempty=True))
    offset: int = attrs.field(default=0, validator=v.int_field(minimum=0))
    length: int = attrs.field(validator=v.int_field(minimum=0))


ProvenanceSpan: TypeAlias = PromptProvenanceSpan | SampledProvenanceSpan


@attrs.frozen(init=False)
class Datum:
    """One example: the model input and the loss function's per-token inputs.

    ``loss_fn_inputs`` values may be :class:`TensorData`, numpy arrays or torch tensors (their
    dtype decides: floats -> float32, integers -> int64), or plain lists, which take the dtype
    of their key (``target_tokens`` int64; ``weights``, ``advantages``, ``logprobs``,
    ``clip_low_threshold``, ``clip_high_threshold``, ``sequence_ratio_mask`` float32). A plain
    list under any other key is rejected: give a TensorData with an explicit dtype.

    Args:
        model_input: the tokens (and images) the model reads.
        loss_fn_inputs: ``{name: tensor}``.
        model_input_spans: optional provenance runs tiling ``model_input`` (newer servers).
        loss_fn_input_spans: optional provenance runs tiling ``target_tokens``; set both span
            lists or neither.

    Raises:
        ValidationError: a value of the wrong type or dtype, an unknown key holding a plain
            list, 1-D ``target_tokens`` and ``weights`` of different lengths, spans set alone.
    """

    model_input: ModelInput
    loss_fn_inputs: Mapping[str, TensorData]
    model_input_spans: tuple[ProvenanceSpan, ...] | None = None
    loss_fn_input_spans: tuple[ProvenanceSpan, ...] | None = None

    def __init__(
        self,
        model_input: ModelInput,
        loss_fn_inputs: Mapping[str, TensorData | Sequence[float] | Any] | None = None,
        *,
        model_input_spans: Sequence[ProvenanceSpan] | None = None,
        loss_fn_input_spans: Sequence[ProvenanceSpan] | None = None,
    ) -> None:
        if not isinstance(model_input, ModelInput):
            raise ValidationError(
                f"expected a ModelInput, got {v.type_name(model_input)} "
                "(use ModelInput.from_ints for token ids)",
                field="Datum.model_input",
            )
        inputs = _coerce_inputs(loss_fn_inputs)
        _check_lengths(inputs)
        spans_in = _spans(model_input_spans, "Datum.model_input_spans")
        spans_loss = _spans(loss_fn_input_spans, "Datum.loss_fn_input_spans")
        if (spans_in is None) != (spans_loss is None):
            raise ValidationError(
                "model_input_spans and loss_fn_input_spans must be set together",
                field="Datum.model_input_spans"
                if spans_in is None
                else "Datum.loss_fn_input_spans",
            )
        self.__attrs_init__(model_input, inputs, spans_in, spans_loss)

    @classmethod
    def _trusted(
        cls,
        model_input: ModelInput,
        loss_fn_inputs: dict[str, TensorData],
        model_input_spans: tuple[ProvenanceSpan, ...] | None = None,
        loss_fn_input_spans: tuple[ProvenanceSpan, ...] | None = None,
    ) -> Datum:
        self = object.__new__(cls)
        self.__attrs_init__(model_input, loss_fn_inputs, model_input_spans, loss_fn_input_spans)
        return self


def _coerce_inputs(raw: Mapping[str, Any] | None) -> dict[str, TensorData]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ValidationError(
            f"expected a mapping of name to tensor, got {v.type_name(raw)}",
            field="Datum.loss_fn_inputs",
        )
    out: dict[str, TensorData] = {}
    for key, value in raw.items():
        if not isinstance(cast(object, key), str) or not key:
            raise ValidationError(
                f"keys must be non-empty strings, got {key!r}", field="Datum.loss_fn_inputs"
            )
        out[key] = _coerce_input(key, value)
    return out


def _coerce_input(key: str, value: Any) -> TensorData:
    field = f"Datum.loss_fn_inputs.{key}"
    if isinstance(value, TensorData):
        return value
    if _packed.is_torch_tensor(value):
        value = _packed.torch_to_numpy(value)
    if _packed.is_ndarray(value):
        buf, code, shape = _packed.pack_ndarray(value, None, field)
        return TensorData._trusted(buf, "float32" if code == "f" else "int64", shape)
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        dtype: TensorDtype | None = LOSS_INPUT_DTYPES.get(key)  # type: ignore[assignment]
        if dtype is None:
            raise ValidationError(
                f"no default dtype for key {key!r}: pass TensorData(data, dtype=...) or a "
                f"numpy array (known keys: {', '.join(sorted(LOSS_INPUT_DTYPES))})",
                field=field,
            )
        buf, shape = _packed.pack_sequence(value, _packed.CODE[dtype], field)
        return TensorData._trusted(buf, dtype, shape)
    raise ValidationError(
        f"expected TensorData, a list or a numpy array, got {v.type_name(value)}", field=field
    )


def _check_lengths(inputs: Mapping[str, TensorData]) -> None:
    targets = inputs.get("target_tokens")
    weights = inputs.get("weights")
    if targets is None or weights is None:
        return
    t_shape, w_shape = targets.dense_shape, weights.dense_shape
    if len(t_shape) == 1 and len(w_shape) == 1 and t_shape != w_shape:
        raise ValidationError(
            f"has {w_shape[0]} elements but target_tokens has {t_shape[0]}",
            field="Datum.loss_fn_inputs.weights",
        )


def _spans(spans: Sequence[ProvenanceSpan] | None, field: str) -> tuple[ProvenanceSpan, ...] | None:
    if spans is None:
        return None
    raw: object = spans
    if isinstance(raw, str | bytes) or not isinstance(raw, Sequence):
        raise ValidationError(f"expected a list of spans, got {v.type_name(raw)}", field=field)
    for i, span in enumerate(spans):
        if not isinstance(span, PromptProvenanceSpan | SampledProvenanceSpan):
            raise ValidationError(
                f"expected PromptProvenanceSpan or SampledProvenanceSpan, got {v.type_name(span)}",
                field=f"{field}[{i}]",
            )
    return tuple(spans)
