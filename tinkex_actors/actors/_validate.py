"""Input checks the facades run in the caller's thread, before anything is sent.

Each raises :class:`~tinkex_actors.errors.ValidationError` naming the argument. Only rules a
facade owns live here (a checkpoint name holds no ``/``, a prompt is not empty, a mapping may
stand for an options object); what a request type's constructor checks is checked there, once:
:func:`build` constructs the request from the call's arguments and names a rejected argument
as the caller spelled it. Scalar rules come from :mod:`tinkex_actors._scalar_checks`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TypeVar

from tinkex_actors import _scalar_checks as sc
from tinkex_actors._constants import TINKER_SCHEME
from tinkex_actors.errors import InvalidTinkerPathError, ValidationError
from tinkex_actors.types import (
    AdamParams,
    Datum,
    DimuonParams,
    ForwardBackwardInput,
    LoraConfig,
    ModelInput,
    OptimizerConfig,
    OptimParams,
    SamplingParams,
)

__all__ = [
    "build",
    "check_forward_input",
    "check_lora",
    "check_metadata",
    "check_model_name",
    "check_name",
    "check_optim_params",
    "check_optimizer",
    "check_prompt",
    "check_sampling_params",
    "check_seconds",
    "check_tinker_path",
    "snapshot_map",
]

T = TypeVar("T")
# Where an attribute's name ends in a field path: "data[0].x" -> "data", "meta.k" -> "meta".
_ATTRIBUTE_END = re.compile(r"[.\[]")


def build(cls: type[T], given: Mapping[str, object], /, **fixed: object) -> T:
    """``cls(**given, **fixed)``: a request type built from a call's arguments and checked by
    its own constructor, once.

    A :class:`~tinkex_actors.errors.ValidationError` about one of ``given`` (the caller's
    arguments) is raised again naming the argument as the caller spelled it
    (``num_samples``, not ``SampleRequest.num_samples``), with the same class and message.
    ``fixed`` holds the client's own values: an error about one of them keeps its full name.
    """
    try:
        return cls(**given, **fixed)
    except ValidationError as exc:
        field = exc.field or ""
        prefix = f"{cls.__name__}."
        short = field.removeprefix(prefix)
        if short == field or _ATTRIBUTE_END.split(short, maxsplit=1)[0] not in given:
            raise
        message = str(exc).removeprefix(f"{field}: ")
        raise type(exc)(message, field=short) from None


def snapshot_map(value: object) -> object:
    """A ``dict`` copy of a mapping argument (a caller's later change must not reach a request
    that is encoded later); anything else as it is, for the request type to reject."""
    return dict(value) if isinstance(value, Mapping) else value


def check_forward_input(
    data: Iterable[Datum], loss_fn: str, loss_fn_config: Mapping[str, float | str] | None
) -> ForwardBackwardInput:
    """A non-empty batch of well-formed datums and a loss name.

    :class:`ForwardBackwardInput` checks the types; the client adds that the batch is not
    empty and that each datum's per-token loss inputs are as long as its model input.
    """
    raw: object = data
    if isinstance(raw, Mapping):  # would pass as an iterable of its keys
        raise ValidationError(f"expected a list of Datum, got {sc.type_name(raw)}", field="data")
    batch = build(
        ForwardBackwardInput,
        {"data": data, "loss_fn": loss_fn, "loss_fn_config": loss_fn_config},
    )
    if not batch.data:
        raise ValidationError("expected at least one Datum, got an empty list", field="data")
    for i, datum in enumerate(batch.data):
        _check_datum(datum, i)
    return batch


def _check_datum(datum: Datum, index: int) -> None:
    try:
        length = datum.model_input.length
    except ValidationError:
        return  # images without expected_tokens: the length is the server's to check
    if length == 0:
        raise ValidationError("expected at least one token", field=f"data[{index}].model_input")
    for name, tensor in datum.loss_fn_inputs.items():
        shape = tensor.dense_shape
        if not shape:
            raise ValidationError(
                "expected one value per model input token, got a scalar",
                field=f"data[{index}].loss_fn_inputs.{name}",
            )
        if shape[0] != length:
            raise ValidationError(
                f"has {shape[0]} entries but the model input has {length} tokens",
                field=f"data[{index}].loss_fn_inputs.{name}",
            )


def _options(cls: type[T], value: object, field: str) -> T:
    """``value`` if it is a ``cls``, else ``cls(**value)`` for a mapping of its fields."""
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        try:
            return cls(**value)
        except TypeError as exc:  # an unknown or missing field name
            raise ValidationError(str(exc), field=field) from None
    raise ValidationError(f"expected {cls.__name__}, got {sc.type_name(value)}", field=field)


def check_adam(adam_params: object) -> AdamParams:
    """An :class:`AdamParams` (a mapping of its fields is accepted)."""
    return _options(AdamParams, adam_params, "adam_params")


def check_optim_params(optim_params: object, adam_params: object = None) -> OptimParams:
    """optim_step's parameters: :class:`AdamParams` or :class:`DimuonParams`, given as
    ``optim_params`` or (legacy keyword, AdamW only) ``adam_params``.

    A mapping of the fields is accepted too; one with ``"type": "dimuon"`` is Dimuon's.
    """
    if optim_params is not None and adam_params is not None:
        raise ValidationError("give optim_params or adam_params, not both", field="adam_params")
    if adam_params is not None:
        return check_adam(adam_params)
    if isinstance(optim_params, AdamParams | DimuonParams):
        return optim_params
    if isinstance(optim_params, Mapping):
        fields = dict(optim_params)
        family = fields.get("type")
        try:
            if family == "dimuon":
                return DimuonParams(**fields)
            if family is None:
                return AdamParams(**fields)
        except TypeError as exc:
            raise ValidationError(str(exc), field="optim_params") from None
        raise ValidationError(
            f"unknown optimizer family {family!r} (expected AdamParams fields, or "
            "'type': 'dimuon' for DimuonParams)",
            field="optim_params.type",
        )
    raise ValidationError(
        f"expected AdamParams or DimuonParams, got {sc.type_name(optim_params)}",
        field="optim_params",
    )


def check_optimizer(optimizer: object, field: str = "optimizer") -> OptimizerConfig:
    """An :class:`OptimizerConfig`, a mapping of its fields, or None (AdamW)."""
    return OptimizerConfig() if optimizer is None else _options(OptimizerConfig, optimizer, field)


def check_lora(lora_config: object, field: str = "lora_config") -> LoraConfig | None:
    """A :class:`LoraConfig`, a mapping of its fields, or None."""
    return None if lora_config is None else _options(LoraConfig, lora_config, field)


def check_name(name: object, field: str) -> str:
    """A non-empty string without ``/`` (checkpoint names become path segments)."""
    name = sc.check_str(name, field, nonblank=True)
    if "/" in name:
        raise ValidationError(f"must not contain '/', got {name!r}", field=field)
    return name


def check_tinker_path(path: object, field: str) -> str:
    """A ``tinker://`` path that is only handed back to the server (a sampler's weights, a
    state to load): any form the server issued is passed through as is. Only what is surely
    wrong is refused: not a str, not ``tinker://...``, or whitespace or control characters.
    Calls that must take a path apart (REST calls by path) parse it themselves and insist on
    the canonical ``tinker://<run>/<kind>/<name>``.
    """
    if not isinstance(path, str):
        raise ValidationError(
            f"expected a tinker:// path (str), got {sc.type_name(path)}", field=field
        )
    rest = path.removeprefix(TINKER_SCHEME)
    if rest == path or not rest.strip("/"):
        raise InvalidTinkerPathError(
            f"expected a path the server issued, like tinker://<run>/<kind>/<name>, got {path!r}",
            field=field,
        )
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in path):
        raise InvalidTinkerPathError(
            f"a tinker:// path holds no whitespace or control characters, got {path!r}",
            field=field,
        )
    return path


def check_seconds(value: object, field: str) -> float | None:
    """None, or a positive finite number of seconds."""
    return None if value is None else sc.check_seconds(value, field)


def check_metadata(value: object, field: str = "user_metadata") -> dict[str, str] | None:
    """None, or a mapping of str to str (copied)."""
    return None if value is None else sc.check_str_map(value, field)


def check_prompt(prompt: object) -> ModelInput:
    """A non-empty :class:`ModelInput`."""
    if not isinstance(prompt, ModelInput):
        raise ValidationError(
            f"expected a ModelInput (ModelInput.from_ints(tokens)), got {sc.type_name(prompt)}",
            field="prompt",
        )
    if not prompt.chunks:
        raise ValidationError(
            "expected at least one token, got an empty ModelInput", field="prompt"
        )
    return prompt


def check_sampling_params(params: object) -> SamplingParams:
    """A :class:`SamplingParams` (a mapping of its fields is accepted)."""
    return _options(SamplingParams, params, "sampling_params")


def check_model_name(value: object, field: str = "base_model") -> str:
    """A non-empty model name."""
    return sc.check_str(value, field, nonblank=True)
