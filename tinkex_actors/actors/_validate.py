"""Input checks the facades run in the caller's thread, before anything is sent.

Each raises :class:`~tinkex_actors.errors.ValidationError` naming the argument.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

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
    "check_adam",
    "check_forward_input",
    "check_lora",
    "check_model_name",
    "check_metadata",
    "check_name",
    "check_optim_params",
    "check_optimizer",
    "check_prompt",
    "check_sampling_params",
    "check_seconds",
    "check_tinker_path",
    "check_ttl",
    "boolean",
    "non_negative_int",
    "positive_int",
]


def _type(value: object) -> str:
    return type(value).__name__


def check_forward_input(
    data: Iterable[Datum], loss_fn: str, loss_fn_config: Mapping[str, float | str] | None
) -> ForwardBackwardInput:
    """A non-empty batch of well-formed datums and a known loss.

    Each datum's per-token loss inputs must be as long as its model input.
    """
    raw: object = data
    if isinstance(raw, Datum | str | bytes | Mapping) or not isinstance(raw, Iterable):
        raise ValidationError(f"expected a list of Datum, got {_type(raw)}", field="data")
    items = list(data)
    if not items:
        raise ValidationError("expected at least one Datum, got an empty list", field="data")
    for i, datum in enumerate(items):
        if not isinstance(datum, Datum):
            raise ValidationError(f"expected Datum, got {_type(datum)}", field=f"data[{i}]")
    given: object = loss_fn
    if not isinstance(given, str):
        raise ValidationError(f"expected a loss name (str), got {_type(given)}", field="loss_fn")
    try:
        batch = ForwardBackwardInput(data=items, loss_fn=loss_fn, loss_fn_config=loss_fn_config)  # type: ignore[arg-type]
    except ValidationError as exc:
        field = exc.field or ""
        short = field.removeprefix("ForwardBackwardInput.") or None
        raise ValidationError(str(exc).split(": ", 1)[-1], field=short) from None
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


def check_adam(adam_params: object) -> AdamParams:
    """An :class:`AdamParams` (a mapping of its fields is accepted)."""
    if isinstance(adam_params, AdamParams):
        return adam_params
    if isinstance(adam_params, Mapping):
        try:
            return AdamParams(**adam_params)
        except TypeError as exc:
            raise ValidationError(str(exc), field="adam_params") from None
    raise ValidationError(f"expected AdamParams, got {_type(adam_params)}", field="adam_params")


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
        f"expected AdamParams or DimuonParams, got {_type(optim_params)}", field="optim_params"
    )


def check_optimizer(optimizer: object, field: str = "optimizer") -> OptimizerConfig:
    """An :class:`OptimizerConfig`, a mapping of its fields, or None (AdamW)."""
    if optimizer is None:
        return OptimizerConfig()
    if isinstance(optimizer, OptimizerConfig):
        return optimizer
    if isinstance(optimizer, Mapping):
        try:
            return OptimizerConfig(**optimizer)
        except TypeError as exc:
            raise ValidationError(str(exc), field=field) from None
    raise ValidationError(f"expected OptimizerConfig, got {_type(optimizer)}", field=field)


def check_lora(lora_config: object, field: str = "lora_config") -> LoraConfig | None:
    """A :class:`LoraConfig`, a mapping of its fields, or None."""
    if lora_config is None or isinstance(lora_config, LoraConfig):
        return lora_config
    if isinstance(lora_config, Mapping):
        try:
            return LoraConfig(**lora_config)
        except TypeError as exc:
            raise ValidationError(str(exc), field=field) from None
    raise ValidationError(f"expected LoraConfig, got {_type(lora_config)}", field=field)


def check_name(name: object, field: str) -> str:
    """A non-empty string without ``/`` (checkpoint names become path segments)."""
    if not isinstance(name, str) or not name.strip():
        raise ValidationError(f"expected a non-empty str, got {name!r}", field=field)
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
        raise ValidationError(f"expected a tinker:// path (str), got {_type(path)}", field=field)
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


def check_ttl(ttl_seconds: object) -> int | None:
    """None, or a positive int of seconds."""
    if ttl_seconds is None:
        return None
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or ttl_seconds < 1:
        raise ValidationError(
            f"expected None or a positive int of seconds, got {ttl_seconds!r}", field="ttl_seconds"
        )
    return ttl_seconds


def check_seconds(value: object, field: str) -> float | None:
    """None, or a positive finite number of seconds."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(
            f"expected seconds (a number) or None, got {_type(value)}", field=field
        )
    if not math.isfinite(value) or value <= 0:
        raise ValidationError(f"must be a positive finite number, got {value!r}", field=field)
    return float(value)


def check_metadata(value: object, field: str = "user_metadata") -> dict[str, str] | None:
    """None, or a mapping of str to str."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValidationError(f"expected a mapping of str to str, got {_type(value)}", field=field)
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise ValidationError(
                f"keys and values must be str, got {_type(key)} -> {_type(item)}", field=field
            )
    return dict(value)


def check_prompt(prompt: object) -> ModelInput:
    """A non-empty :class:`ModelInput`."""
    if not isinstance(prompt, ModelInput):
        raise ValidationError(
            f"expected a ModelInput (ModelInput.from_ints(tokens)), got {_type(prompt)}",
            field="prompt",
        )
    if not prompt.chunks:
        raise ValidationError(
            "expected at least one token, got an empty ModelInput", field="prompt"
        )
    return prompt


def check_sampling_params(params: object) -> SamplingParams:
    """A :class:`SamplingParams` (a mapping of its fields is accepted)."""
    if isinstance(params, SamplingParams):
        return params
    if isinstance(params, Mapping):
        try:
            return SamplingParams(**params)
        except TypeError as exc:
            raise ValidationError(str(exc), field="sampling_params") from None
    raise ValidationError(f"expected SamplingParams, got {_type(params)}", field="sampling_params")


def check_model_name(value: object, field: str = "base_model") -> str:
    """A non-empty model name."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"expected a model name, got {value!r}", field=field)
    return value


def positive_int(value: object, field: str) -> int:
    """An int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(f"expected an int >= 1, got {value!r}", field=field)
    return value


def non_negative_int(value: object, field: str) -> int:
    """An int >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(f"expected an int >= 0, got {value!r}", field=field)
    return value


def optional_non_negative_int(value: object, field: str) -> int | None:
    """None, or an int >= 0."""
    return None if value is None else non_negative_int(value, field)


def boolean(value: object, field: str) -> bool:
    """A bool."""
    if not isinstance(value, bool):
        raise ValidationError(f"expected a bool, got {_type(value)}", field=field)
    return value
