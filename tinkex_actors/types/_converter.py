"""THE cattrs converter of tinkex_actors: wire types <-> JSON-ready Python values.

Encoding reproduces the official SDK's request bodies, which are pydantic dumps with
``exclude_none=True`` and defaults included: a field is left out only when it is None *and*
its default is None (fields marked ``SEND_NULL`` send ``null``), so literal ``type`` tags and
other defaults always travel. Bytes are base64 (not cattrs' base85), datetimes ISO-8601 with
``Z`` for UTC, tuples become lists.

Decoding is forward compatible (unknown keys are ignored) but strict about what is there: a
missing required field, a JSON value of the wrong type (``"5"`` for an int, ``5`` for a
string, ``true`` for a number) or an unknown literal raises. The codec in
:mod:`tinkex_actors.wire` turns every such failure into a ``ResponseDecodeError``.

The hot types (TensorData, token chunks, ModelInput, Datum, ForwardBackwardInput) have
hand-written hooks: packed numbers are unpacked with one C call and big number lists are
checked with one pass instead of per-element hooks.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any, get_args, get_origin

import attrs
import cattrs
from cattrs.gen import make_dict_unstructure_fn, override
from cattrs.preconf.orjson import make_converter

from tinkex_actors.errors import RequestErrorCategory, ValidationError
from tinkex_actors.types._datum import Datum, PromptProvenanceSpan, SampledProvenanceSpan
from tinkex_actors.types._model_input import (
    DmelChunk,
    EncodedTextChunk,
    ImageAssetPointerChunk,
    ImageChunk,
    ModelInput,
    ModelInputChunk,
    decode_base64,
)
from tinkex_actors.types._sampling import Stop
from tinkex_actors.types._telemetry import (
    GenericEvent,
    SessionEndEvent,
    SessionStartEvent,
    TelemetryEvent,
    UnhandledExceptionEvent,
)
from tinkex_actors.types._tensor import TensorData
from tinkex_actors.types._training import ForwardBackwardInput

__all__ = ["converter"]

converter: cattrs.Converter = make_converter()

_TensorJson = dict[str, Any]


# ================================================================================ encoding


def _unstructure_attrs_factory(cls: type) -> Callable[[Any], dict[str, Any]]:
    overrides: dict[str, Any] = {
        a.name: override(omit_if_default=True)
        for a in attrs.fields(cls)
        if a.default is None and not a.metadata.get("send_null")
    }
    return make_dict_unstructure_fn(cls, converter, _cattrs_omit_if_default=False, **overrides)


def _tensor_to_json(td: TensorData) -> _TensorJson:
    out: _TensorJson = {"data": td.data, "dtype": td.dtype}
    if td.shape is not None:
        out["shape"] = list(td.shape)
    if td.sparse_crow_indices is not None:
        out["sparse_crow_indices"] = list(td.sparse_crow_indices)
    if td.sparse_col_indices is not None:
        out["sparse_col_indices"] = list(td.sparse_col_indices)
    return out


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _chunk_to_json(chunk: ModelInputChunk) -> dict[str, Any]:
    if type(chunk) is EncodedTextChunk:
        return {"tokens": chunk.tokens, "type": "encoded_text"}
    out: dict[str, Any] = converter.unstructure(chunk, type(chunk))
    return out


def _model_input_to_json(mi: ModelInput) -> dict[str, Any]:
    return {"chunks": [_chunk_to_json(c) for c in mi.chunks]}


def _span_to_json(span: PromptProvenanceSpan | SampledProvenanceSpan) -> dict[str, Any]:
    kind = "sampled_tokens" if isinstance(span, SampledProvenanceSpan) else "prompt_tokens"
    return {
        "type": kind,
        "sequence_id": span.sequence_id,
        "offset": span.offset,
        "length": span.length,
    }


def _datum_to_json(d: Datum) -> dict[str, Any]:
    out: dict[str, Any] = {
        "loss_fn_inputs": {k: _tensor_to_json(td) for k, td in d.loss_fn_inputs.items()},
        "model_input": _model_input_to_json(d.model_input),
    }
    # Provenance spans exist only in the protobuf schema upstream; JSON carries them (tagged
    # by "type") only when they were set, so ordinary datums match the official JSON shape.
    if d.model_input_spans is not None and d.loss_fn_input_spans is not None:
        out["model_input_spans"] = [_span_to_json(s) for s in d.model_input_spans]
        out["loss_fn_input_spans"] = [_span_to_json(s) for s in d.loss_fn_input_spans]
    return out


def _fbi_to_json(fbi: ForwardBackwardInput) -> dict[str, Any]:
    out: dict[str, Any] = {"data": [_datum_to_json(d) for d in fbi.data], "loss_fn": fbi.loss_fn}
    if fbi.loss_fn_config is not None:
        out["loss_fn_config"] = dict(fbi.loss_fn_config)
    return out


def _datetime_to_json(value: dt.datetime) -> str:
    text = value.isoformat()
    # pydantic writes UTC as "Z"; match it so bodies are identical.
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _is_tuple_type(t: Any) -> bool:
    return t is tuple or get_origin(t) is tuple


def _tuple_to_json(value: tuple[Any, ...]) -> list[Any]:
    return [converter.unstructure(item) for item in value]


# ================================================================================ decoding


def _wrong(value: object, expected: str) -> TypeError:
    return TypeError(f"expected {expected}, got {_json_type(value)}")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _structure_str(value: Any, _: type) -> str:
    if type(value) is not str:
        raise _wrong(value, "a string")
    return value


def _structure_int(value: Any, _: type) -> int:
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    raise _wrong(value, "an integer")


def _structure_float(value: Any, _: type) -> float:
    if type(value) is float:
        return value
    if type(value) is int:
        return float(value)
    raise _wrong(value, "a number")


def _structure_bool(value: Any, _: type) -> bool:
    if type(value) is not bool:
        raise _wrong(value, "a boolean")
    return value


def _structure_bytes(value: Any, _: type) -> bytes:
    return decode_base64(value, "base64 data")


def _structure_datetime(value: Any, _: type) -> dt.datetime:
    if type(value) is int or type(value) is float:
        return dt.datetime.fromtimestamp(value, tz=dt.UTC)
    if type(value) is not str:
        raise _wrong(value, "an ISO-8601 datetime string")
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"not an ISO-8601 datetime: {value[:40]!r}") from exc


def _structure_category(value: Any, _: type) -> RequestErrorCategory:
    return RequestErrorCategory.parse(value)


def _number_list(value: Any, allowed: frozenset[type], expected: str) -> list[Any]:
    if type(value) is not list:
        raise _wrong(value, expected)
    # One C-level pass over the element types instead of a hook call per element.
    if not set(map(type, value)) <= allowed:
        bad = next(x for x in value if type(x) not in allowed)
        raise TypeError(f"expected {expected}, found {_json_type(bad)}")
    return value


_INT_LIST: frozenset[type] = frozenset({int})
_FLOAT_LIST: frozenset[type] = frozenset({int, float})
_OPT_FLOAT_LIST: frozenset[type] = frozenset({int, float, type(None)})


def _structure_int_list(value: Any, _: type) -> list[int]:
    return _number_list(value, _INT_LIST, "an array of integers")


def _structure_float_list(value: Any, _: type) -> list[float]:
    return _number_list(value, _FLOAT_LIST, "an array of numbers")


def _structure_opt_float_list(value: Any, _: type) -> list[float | None]:
    return _number_list(value, _OPT_FLOAT_LIST, "an array of numbers or nulls")


def _index_list(value: Any, key: str) -> list[int] | None:
    if value is None:
        return None
    return _structure_int_list(value, list)


def _structure_tensor(value: Any, _: type) -> TensorData:
    if type(value) is not dict:
        raise _wrong(value, "a TensorData object")
    dtype = value.get("dtype")
    if dtype not in ("int64", "float32"):
        raise ValueError(f"TensorData.dtype must be 'int64' or 'float32', got {dtype!r}")
    data = value.get("data")
    if data is None:
        raise KeyError("data")
    # float32 data may hold nulls where the sender wrote NaN (JSON has no NaN).
    if dtype == "float32":
        data = [float("nan") if x is None else x for x in _structure_opt_float_list(data, list)]
    else:
        data = _structure_int_list(data, list)
    return TensorData(
        data,
        dtype,
        _index_list(value.get("shape"), "shape"),
        _index_list(value.get("sparse_crow_indices"), "sparse_crow_indices"),
        _index_list(value.get("sparse_col_indices"), "sparse_col_indices"),
    )


def _structure_text_chunk(value: Any, _: type) -> EncodedTextChunk:
    if type(value) is not dict:
        raise _wrong(value, "an encoded_text chunk object")
    if "tokens" not in value:
        raise KeyError("tokens")
    return EncodedTextChunk(_structure_int_list(value["tokens"], list))


_CHUNK_BY_TAG: dict[str, type] = {
    "encoded_text": EncodedTextChunk,
    "image": ImageChunk,
    "image_asset_pointer": ImageAssetPointerChunk,
    "dmel": DmelChunk,
}


def _structure_chunk(value: Any, _: Any) -> ModelInputChunk:
    if type(value) is not dict:
        raise _wrong(value, "a chunk object")
    tag = value.get("type")
    if tag is None:
        # Tolerate untagged chunks the way lenient servers do: guess from the keys.
        tag = next((t for t, k in _UNTAGGED_KEYS if k in value), None)
    cls = _CHUNK_BY_TAG.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise ValueError(f"unknown chunk type {tag!r}; expected one of {', '.join(_CHUNK_BY_TAG)}")
    result: ModelInputChunk = converter.structure(value, cls)
    return result


_UNTAGGED_KEYS = (
    ("encoded_text", "tokens"),
    ("image", "data"),
    ("image_asset_pointer", "location"),
    ("dmel", "dmel"),
)


def _structure_model_input(value: Any, _: type) -> ModelInput:
    if type(value) is not dict:
        raise _wrong(value, "a ModelInput object")
    chunks = value.get("chunks")
    if type(chunks) is not list:
        raise KeyError("chunks") if chunks is None else _wrong(chunks, "an array of chunks")
    return ModelInput(tuple(_structure_chunk(c, ModelInputChunk) for c in chunks))


def _structure_span(value: Any) -> PromptProvenanceSpan | SampledProvenanceSpan:
    if type(value) is not dict:
        raise _wrong(value, "a provenance span object")
    cls: type[PromptProvenanceSpan | SampledProvenanceSpan] = (
        SampledProvenanceSpan if value.get("type") == "sampled_tokens" else PromptProvenanceSpan
    )
    span: PromptProvenanceSpan | SampledProvenanceSpan = converter.structure(value, cls)
    return span


def _structure_datum(value: Any, _: type) -> Datum:
    if type(value) is not dict:
        raise _wrong(value, "a Datum object")
    if "model_input" not in value:
        raise KeyError("model_input")
    raw_inputs = value.get("loss_fn_inputs", {})
    if type(raw_inputs) is not dict:
        raise _wrong(raw_inputs, "an object of tensors")
    inputs = {str(k): _structure_tensor(t, TensorData) for k, t in raw_inputs.items()}
    spans_in = value.get("model_input_spans")
    spans_loss = value.get("loss_fn_input_spans")
    return Datum(
        _structure_model_input(value["model_input"], ModelInput),
        inputs,
        model_input_spans=None if spans_in is None else [_structure_span(s) for s in spans_in],
        loss_fn_input_spans=None
        if spans_loss is None
        else [_structure_span(s) for s in spans_loss],
    )


def _structure_stop(value: Any, _: Any) -> Stop | None:
    if value is None or type(value) is str:
        return value
    if type(value) is not list:
        raise _wrong(value, "a string or an array of strings or token ids")
    if all(type(x) is str for x in value):
        return tuple(value)
    return tuple(_structure_int_list(value, list))


_EVENT_BY_NAME: dict[str, type] = {
    "SESSION_START": SessionStartEvent,
    "SESSION_END": SessionEndEvent,
    "UNHANDLED_EXCEPTION": UnhandledExceptionEvent,
    "GENERIC_EVENT": GenericEvent,
}


def _structure_event(value: Any, _: Any) -> TelemetryEvent:
    if type(value) is not dict:
        raise _wrong(value, "a telemetry event object")
    cls = _EVENT_BY_NAME.get(value.get("event"))  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"unknown telemetry event {value.get('event')!r}")
    event: TelemetryEvent = converter.structure(value, cls)
    return event


def _structure_any_mapping(value: Any, _: Any) -> dict[str, Any]:
    if type(value) is not dict:
        raise _wrong(value, "an object")
    return value


def _is_str_any_dict(t: Any) -> bool:
    return get_origin(t) in (dict, Mapping) and get_args(t) == (str, Any)


def _is_list_type(t: Any) -> bool:
    return get_origin(t) is list


def _structure_list_factory(t: Any) -> Callable[[Any, Any], list[Any]]:
    # cattrs would iterate any iterable (a string becomes a list of characters): JSON arrays only.
    (item_type,) = get_args(t) or (Any,)
    item_hook = converter.get_structure_hook(item_type)

    def structure(value: Any, _: Any) -> list[Any]:
        if type(value) is not list:
            raise _wrong(value, "an array")
        out = []
        for i, item in enumerate(value):
            try:
                out.append(item_hook(item, item_type))
            except Exception as exc:
                raise ValueError(f"element {i}: {_brief(exc)}") from exc
        return out

    return structure


def _is_dict_type(t: Any) -> bool:
    return get_origin(t) in (dict, Mapping)


def _structure_dict_factory(t: Any) -> Callable[[Any, Any], dict[str, Any]]:
    args = get_args(t)
    value_type = args[1] if len(args) == 2 else Any
    value_hook = converter.get_structure_hook(value_type)

    def structure(value: Any, _: Any) -> dict[str, Any]:
        if type(value) is not dict:
            raise _wrong(value, "an object")
        out = {}
        for key, item in value.items():
            try:
                out[key] = value_hook(item, value_type)
            except Exception as exc:
                raise ValueError(f"key {key!r}: {_brief(exc)}") from exc
        return out

    return structure


def _is_fixed_tuple(t: Any) -> bool:
    args = get_args(t)
    return get_origin(t) is tuple and bool(args) and args[-1] is not Ellipsis


def _structure_tuple_factory(t: Any) -> Callable[[Any, Any], tuple[Any, ...]]:
    item_types = get_args(t)
    hooks = [converter.get_structure_hook(a) for a in item_types]

    def structure(value: Any, _: Any) -> tuple[Any, ...]:
        if type(value) is not list or len(value) != len(item_types):
            raise _wrong(value, f"an array of {len(item_types)} items")
        return tuple(hook(item, a) for hook, item, a in zip(hooks, value, item_types, strict=True))

    return structure


def _brief(exc: BaseException) -> str:
    if isinstance(exc, cattrs.BaseValidationError):
        return "; ".join(cattrs.transform_error(exc, path="$"))
    return str(exc) or type(exc).__name__


def _validation_to_value_error(func: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    # Constructors raise ValidationError; inside a decode that is a malformed value.
    def hook(value: Any, t: Any) -> Any:
        try:
            return func(value, t)
        except ValidationError as exc:
            raise ValueError(str(exc)) from exc

    return hook


# ================================================================================ registration


def _register() -> None:
    c = converter
    # encoding
    c.register_unstructure_hook_factory(attrs.has, _unstructure_attrs_factory)
    c.register_unstructure_hook(TensorData, _tensor_to_json)
    c.register_unstructure_hook(EncodedTextChunk, _chunk_to_json)
    c.register_unstructure_hook(ModelInput, _model_input_to_json)
    c.register_unstructure_hook(Datum, _datum_to_json)
    c.register_unstructure_hook(ForwardBackwardInput, _fbi_to_json)
    c.register_unstructure_hook(bytes, _b64)
    c.register_unstructure_hook(dt.datetime, _datetime_to_json)
    c.register_unstructure_hook_func(_is_tuple_type, _tuple_to_json)
    # decoding: strict primitives
    c.register_structure_hook(str, _structure_str)
    c.register_structure_hook(int, _structure_int)
    c.register_structure_hook(float, _structure_float)
    c.register_structure_hook(bool, _structure_bool)
    c.register_structure_hook(bytes, _structure_bytes)
    c.register_structure_hook(dt.datetime, _structure_datetime)
    c.register_structure_hook(RequestErrorCategory, _structure_category)
    # Later registrations win: the generic list/tuple rules first, the fast paths after.
    c.register_structure_hook_factory(_is_list_type, _structure_list_factory)
    c.register_structure_hook_factory(_is_dict_type, _structure_dict_factory)
    c.register_structure_hook_factory(_is_fixed_tuple, _structure_tuple_factory)
    c.register_structure_hook_func(lambda t: t == list[int], _structure_int_list)
    c.register_structure_hook_func(lambda t: t == list[float], _structure_float_list)
    c.register_structure_hook_func(lambda t: t == list[float | None], _structure_opt_float_list)
    c.register_structure_hook_func(_is_str_any_dict, _structure_any_mapping)
    # decoding: hot and union types
    c.register_structure_hook(TensorData, _validation_to_value_error(_structure_tensor))
    c.register_structure_hook(EncodedTextChunk, _validation_to_value_error(_structure_text_chunk))
    c.register_structure_hook(ModelInput, _validation_to_value_error(_structure_model_input))
    c.register_structure_hook(Datum, _validation_to_value_error(_structure_datum))
    c.register_structure_hook_func(lambda t: t == ModelInputChunk, _structure_chunk)
    c.register_structure_hook_func(lambda t: t == Stop | None, _structure_stop)
    c.register_structure_hook_func(lambda t: t == TelemetryEvent, _structure_event)


_register()
