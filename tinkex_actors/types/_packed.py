"""Packed little-endian numeric buffers: the storage behind TensorData and token chunks.

Numbers travel on the protobuf wire as raw little-endian arrays, so the types keep them in that
form from the moment they are built: ``struct.pack`` converts and type-checks a list in one C
pass, numpy arrays become bytes with one ``tobytes``, and encoding a request is a memcpy.
JSON and the Python-list views unpack on demand (``memoryview.cast(...).tolist()``).

Nothing here imports numpy at import time; numpy arrays are recognised by type and handled
through ``sys.modules["numpy"]`` (an ndarray cannot exist unless numpy was imported).
"""

from __future__ import annotations

import itertools
import math
import struct
import sys
from array import array
from collections.abc import Sequence
from typing import Any, Final, NamedTuple

import orjson

from tinkex_actors.errors import ValidationError

#: struct/array/memoryview codes per wire dtype.
CODE: Final = {"int64": "q", "float32": "f", "int32": "i"}
ITEMSIZE: Final = {"q": 8, "f": 4, "i": 4}
_NUMPY_DTYPE: Final = {"q": "<i8", "f": "<f4", "i": "<i4"}
_INT_RANGE: Final = {"q": (-(2**63), 2**63 - 1), "i": (-(2**31), 2**31 - 1)}
_LITTLE: Final = sys.byteorder == "little"
#: Maps the high byte of a little-endian int32 to the fill byte of its int64 sign extension.
_SIGN_FILL: Final = bytes(0 if b < 0x80 else 0xFF for b in range(256))


def is_ndarray(value: object) -> bool:
    """True for a numpy ndarray, without importing numpy."""
    np = sys.modules.get("numpy")
    return np is not None and isinstance(value, np.ndarray)


def is_torch_tensor(value: object) -> bool:
    """True for a torch tensor, without importing torch."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def torch_to_numpy(value: Any) -> Any:
    """A CPU numpy copy of a torch tensor (bfloat16 widened to float32)."""
    torch = sys.modules["torch"]
    tensor = value.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    return tensor.contiguous().numpy()


class Packed(NamedTuple):
    """A packed sequence: little-endian bytes and the shape."""

    buf: bytes
    shape: tuple[int, ...]


def pack_sequence(values: Sequence[Any], code: str, field: str) -> Packed:
    """Pack a (possibly nested, rectangular) sequence of numbers.

    Integers must be real ints (bools are rejected); floats accept ints and floats.
    """
    if isinstance(values, array):
        return Packed(_pack_array(values, code, field), (len(values),))
    if isinstance(values, str | bytes | bytearray | memoryview) or not isinstance(values, Sequence):
        raise ValidationError(
            f"expected a list of numbers, got {type(values).__name__}", field=field
        )
    shape: tuple[int, ...] = (len(values),)
    flat: Sequence[Any] = values
    if values and isinstance(values[0], list | tuple):
        flat, shape = _flatten(values, field)
    n = len(flat)
    try:
        buf = struct.pack(f"<{n}{code}", *flat)
    except (struct.error, TypeError, OverflowError, ValueError) as exc:
        raise _element_error(flat, code, field) from exc
    if code != "f" and _contains_bool(flat):
        index = next(i for i, v in enumerate(flat) if isinstance(v, bool))
        raise ValidationError(f"element {index} is a bool; expected an integer", field=field)
    return Packed(buf, shape)


def _pack_array(values: array[Any], code: str, field: str) -> bytes:
    if values.typecode == code or (values.itemsize == ITEMSIZE[code] and _same_kind(values, code)):
        out = values if values.typecode == code else array(code, values.tobytes())
    else:
        try:
            out = array(code, values)
        except (TypeError, OverflowError) as exc:
            raise _element_error(values, code, field) from exc
    if not _LITTLE:
        out = array(code, out)
        out.byteswap()
    return out.tobytes()


def _same_kind(values: array[Any], code: str) -> bool:
    is_float = values.typecode in "fd"
    return is_float == (code == "f") and values.typecode not in "BHILQ"


def _flatten(values: Sequence[Any], field: str) -> tuple[list[Any], tuple[int, ...]]:
    """Flatten a rectangular nested list row-major; raise on ragged input."""
    rows: list[Any] = list(values)
    shape = [len(rows)]
    while rows and isinstance(rows[0], list | tuple):
        width = len(rows[0])
        for row in rows:
            if not isinstance(row, list | tuple) or len(row) != width:
                raise ValidationError(
                    "nested lists must be rectangular (every row the same length)", field=field
                )
        shape.append(width)
        rows = list(itertools.chain.from_iterable(rows))
    return rows, tuple(shape)


def _contains_bool(values: Sequence[Any]) -> bool:
    # struct already accepted every element as an integer, so a JSON rendering can only hold
    # digits, '-', ',' and brackets, or 'true'/'false': one C pass finds a bool.
    try:
        rendered = orjson.dumps(values)
    except TypeError:  # numpy integers and other __index__ types orjson cannot render
        return any(isinstance(v, bool) for v in values)
    return b"t" in rendered or b"f" in rendered


def _element_error(values: Sequence[Any], code: str, field: str) -> ValidationError:
    """Find the first bad element and describe it (error path only, so a Python loop is fine)."""
    want = "a number" if code == "f" else "an integer"
    for i, v in enumerate(values):
        if isinstance(v, bool) and code != "f":
            return ValidationError(f"element {i} is a bool; expected an integer", field=field)
        if code == "f":
            if isinstance(v, bool) or not _floatable(v):
                return ValidationError(
                    f"element {i} is a {type(v).__name__}; expected {want}", field=field
                )
            if math.isfinite(float(v)) and abs(float(v)) > 3.4028234663852886e38:
                return ValidationError(
                    f"element {i} ({float(v)!r}) is outside float32 range", field=field
                )
        else:
            if not hasattr(v, "__index__"):
                return ValidationError(
                    f"element {i} is a {type(v).__name__}; expected {want}", field=field
                )
            low, high = _INT_RANGE[code]
            if not low <= int(v) <= high:
                bits = 64 if code == "q" else 32
                return ValidationError(
                    f"element {i} ({int(v)}) does not fit in int{bits}", field=field
                )
    return ValidationError(f"expected a list of {want}s", field=field)


def _floatable(value: object) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return not isinstance(value, str | bytes)


def pack_ndarray(arr: Any, code: str | None, field: str) -> tuple[bytes, str, tuple[int, ...]]:
    """Pack a numpy array; ``code`` None infers it (float kinds -> 'f', integer kinds -> 'q').

    Returns (bytes, code, shape). Bool and non-numeric arrays are rejected, and so is an
    integer target given a float array (no silent truncation).
    """
    np = sys.modules["numpy"]
    kind = arr.dtype.kind
    if kind not in "iuf":
        raise ValidationError(
            f"numpy dtype {arr.dtype} is not supported; use an integer or float array", field=field
        )
    if code is None:
        code = "f" if kind == "f" else "q"
    if code != "f" and kind == "f":
        raise ValidationError(f"expected an integer array, got numpy {arr.dtype}", field=field)
    if code != "f" and arr.size and (arr.dtype.itemsize > ITEMSIZE[code] or kind == "u"):
        low, high = _INT_RANGE[code]
        if int(arr.min()) < low or int(arr.max()) > high:
            raise ValidationError(f"values do not fit in {_NUMPY_DTYPE[code][1:]}", field=field)
    out = np.ascontiguousarray(arr, dtype=_NUMPY_DTYPE[code])
    return out.tobytes(), code, tuple(int(d) for d in arr.shape)


def unpack(buf: bytes, code: str) -> list[Any]:
    """The numbers of a packed little-endian buffer as a Python list."""
    if _LITTLE:
        values: list[Any] = memoryview(buf).cast(code).tolist()  # type: ignore[call-overload]
        return values
    return list(struct.unpack(f"<{len(buf) // ITEMSIZE[code]}{code}", buf))


def count(buf: bytes, code: str) -> int:
    """Number of elements in a packed buffer."""
    return len(buf) // ITEMSIZE[code]


def widen_int32(buf: bytes) -> bytes:
    """Little-endian int32 -> int64 (sign-extended), by byte interleaving: no per-element work."""
    n = len(buf) // 4
    out = bytearray(8 * n)
    for j in range(4):
        out[j::8] = buf[j::4]
    fill = buf[3::4].translate(_SIGN_FILL)
    for j in range(4, 8):
        out[j::8] = fill
    return bytes(out)


def bfloat16_to_float32(buf: bytes) -> bytes:
    """Little-endian bfloat16 -> float32: a bfloat16 is the upper half of a float32."""
    n = len(buf) // 2
    out = bytearray(4 * n)
    out[2::4] = buf[0::2]
    out[3::4] = buf[1::2]
    return bytes(out)
