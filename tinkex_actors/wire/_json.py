"""JSON codec: wire types <-> bytes through the one cattrs converter and orjson."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import cattrs
import orjson

from tinkex_actors.errors import ResponseDecodeError, ValidationError
from tinkex_actors.types import _packed
from tinkex_actors.types._converter import converter
from tinkex_actors.types._datum import Datum
from tinkex_actors.types._model_input import EncodedTextChunk, ModelInput
from tinkex_actors.types._tensor import TensorData
from tinkex_actors.types._training import (
    ForwardBackwardInput,
    ForwardBackwardRequest,
    ForwardRequest,
)

__all__ = ["decode_json", "decode_json_request", "encode_json", "from_jsonable", "to_jsonable"]

T = TypeVar("T")
_LITTLE = sys.byteorder == "little"

Body = bytes | bytearray | memoryview | str


def to_jsonable(obj: Any) -> Any:
    """The JSON-ready form of a wire object (dicts, lists, str, numbers, bools, None)."""
    return converter.unstructure(obj)


def encode_json(obj: Any) -> bytes:
    """Encode a request (or any wire object) as the JSON body the official SDK would send.

    None-defaulted fields that are None are left out; every other field, ``type`` tags and
    defaults included, is sent. NaN and infinities become ``null`` (JSON has neither).
    The bytes always parse to exactly ``to_jsonable(obj)``.
    """
    fast = _FAST.get(type(obj))
    data = fast(obj) if fast is not None else converter.unstructure(obj)
    return orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY)


# ------------------------------------------------------------------ fast path for big batches
# The same JSON as the converter's hooks, but when numpy is loaded the packed numbers go to
# orjson as zero-copy arrays instead of millions of Python objects (float32 widened to float64,
# so the digits are those of the float32 value, like the converter's lists). Without numpy
# they are unpacked to lists. tests/wire check that both paths give the same JSON.


def _numbers(buf: bytes, code: str) -> Any:
    np = sys.modules.get("numpy")
    if np is None or not _LITTLE:
        return _packed.unpack(buf, code)
    if code == "f":
        return np.frombuffer(buf, dtype="<f4").astype(np.float64)
    return np.frombuffer(buf, dtype="<i8" if code == "q" else "<i4")


def _fast_tensor(td: TensorData) -> dict[str, Any]:
    out: dict[str, Any] = {
        "data": _numbers(td.to_bytes(), _packed.CODE[td.dtype]),
        "dtype": td.dtype,
    }
    if td.shape is not None:
        out["shape"] = td.shape
    if td.sparse_crow_indices is not None:
        out["sparse_crow_indices"] = td.sparse_crow_indices
    if td.sparse_col_indices is not None:
        out["sparse_col_indices"] = td.sparse_col_indices
    return out


def _fast_model_input(mi: ModelInput) -> dict[str, Any]:
    chunks = [
        {"tokens": _numbers(c.to_bytes(), "i"), "type": "encoded_text"}
        if type(c) is EncodedTextChunk
        else converter.unstructure(c, type(c))
        for c in mi.chunks
    ]
    return {"chunks": chunks}


def _fast_datum(d: Datum) -> dict[str, Any]:
    if d.model_input_spans is not None:
        out: dict[str, Any] = converter.unstructure(d, Datum)
        return out
    return {
        "loss_fn_inputs": {k: _fast_tensor(td) for k, td in d.loss_fn_inputs.items()},
        "model_input": _fast_model_input(d.model_input),
    }


def _fast_input(fbi: ForwardBackwardInput) -> dict[str, Any]:
    out: dict[str, Any] = {"data": [_fast_datum(d) for d in fbi.data], "loss_fn": fbi.loss_fn}
    if fbi.loss_fn_config is not None:
        out["loss_fn_config"] = dict(fbi.loss_fn_config)
    return out


def _fast_fb_request(req: ForwardBackwardRequest) -> dict[str, Any]:
    out: dict[str, Any] = {
        "forward_backward_input": _fast_input(req.forward_backward_input),
        "model_id": req.model_id,
    }
    if req.seq_id is not None:
        out["seq_id"] = req.seq_id
    return out


def _fast_forward_request(req: ForwardRequest) -> dict[str, Any]:
    out: dict[str, Any] = {
        "forward_input": _fast_input(req.forward_input),
        "model_id": req.model_id,
    }
    if req.seq_id is not None:
        out["seq_id"] = req.seq_id
    return out


_FAST: dict[type, Callable[[Any], Any]] = {
    ForwardBackwardRequest: _fast_fb_request,
    ForwardRequest: _fast_forward_request,
    ForwardBackwardInput: _fast_input,
    Datum: _fast_datum,
    ModelInput: _fast_model_input,
    TensorData: _fast_tensor,
}


def decode_json(cls: type[T], body: Body) -> T:
    """Decode a JSON response body into ``cls``.

    Unknown keys are ignored (servers may add fields).

    Raises:
        ResponseDecodeError: the body is not JSON, or a required field is missing, or a value
            has the wrong JSON type or an invalid value. Carries a body excerpt and the
            expected type; never a bare KeyError or cattrs exception.
    """
    return _decode(cls, body, ResponseDecodeError)


def decode_json_request(cls: type[T], body: Body) -> T:
    """Decode a JSON request body into ``cls`` (for servers).

    Raises:
        ValidationError: malformed JSON or a body that does not fit ``cls`` (``field`` is
            ``"body"``); servers answer it with a 4xx.
    """
    return _decode(cls, body, ValidationError)


def from_jsonable(cls: type[T], data: Any) -> T:
    """Build ``cls`` from already-parsed JSON (raises ResponseDecodeError like decode_json)."""
    try:
        _check_object(cls, data)
        result: T = converter.structure(data, cls)
    except Exception as exc:
        raise ResponseDecodeError(
            describe_error(exc), body=_excerpt_source(data), expected=_name(cls)
        ) from exc
    return result


def _decode(cls: type[T], body: Body, error: type[Exception]) -> T:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _error(error, f"body is not valid JSON ({exc})", body, cls) from exc
    try:
        _check_object(cls, data)
        result: T = converter.structure(data, cls)
    except Exception as exc:
        raise _error(error, describe_error(exc), body, cls) from exc
    return result


def _check_object(cls: type, data: Any) -> None:
    if attrs.has(cls) and not isinstance(data, dict):
        kind = "an array" if isinstance(data, list) else type(data).__name__
        raise TypeError(f"expected a JSON object, got {kind}")


def _error(error: type[Exception], message: str, body: Body, cls: type) -> Exception:
    raw = bytes(body).decode("utf-8", "replace") if not isinstance(body, str) else body
    if error is ResponseDecodeError:
        return ResponseDecodeError(message, body=raw, expected=_name(cls))
    return ValidationError(f"not a valid {_name(cls)}: {message}", field="body")


def _name(cls: type) -> str:
    return f"{getattr(cls, '__name__', str(cls))} (JSON)"


def _excerpt_source(data: Any) -> str:
    try:
        return orjson.dumps(data).decode("utf-8", "replace")
    except TypeError:
        return repr(data)


def _format_exception(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, KeyError):
        return "required field missing"
    expected = getattr(type_, "__name__", None) or str(type_)
    return f"invalid value ({exc}); expected {expected}"


def describe_error(exc: BaseException) -> str:
    """One line naming every problem of a failed structure, with its JSON path."""
    if isinstance(exc, cattrs.BaseValidationError):
        problems = cattrs.transform_error(exc, path="$", format_exception=_format_exception)
        return "; ".join(problems)
    if isinstance(exc, KeyError):
        return f"required field missing: {exc}"
    return str(exc) or type(exc).__name__
