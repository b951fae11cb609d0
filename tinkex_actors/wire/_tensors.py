"""Protobuf ``Tensor`` messages <-> TensorData, shared by the request and result codecs."""

from __future__ import annotations

from typing import Any

from tinkex_actors.errors import ValidationError
from tinkex_actors.types import _packed
from tinkex_actors.types._tensor import TensorData, TensorDtype
from tinkex_actors.wire import tinker_public_pb2 as pb

__all__ = ["PROTO_DTYPE", "read_buffer", "tensor_from_proto", "write_tensor"]

PROTO_DTYPE: dict[str, int] = {"float32": pb.DTYPE_FLOAT32, "int64": pb.DTYPE_INT64}
#: Bytes per element of each proto dtype, as it arrives on the wire.
_WIRE_ITEMSIZE: dict[int, int] = {
    pb.DTYPE_FLOAT32: 4,
    pb.DTYPE_INT64: 8,
    pb.DTYPE_INT32: 4,
    pb.DTYPE_BFLOAT16: 2,
}
#: The public dtype each proto dtype widens to.
_PUBLIC_DTYPE: dict[int, TensorDtype] = {
    pb.DTYPE_FLOAT32: "float32",
    pb.DTYPE_BFLOAT16: "float32",
    pb.DTYPE_INT64: "int64",
    pb.DTYPE_INT32: "int64",
}


def write_tensor(tm: Any, td: TensorData) -> None:
    """Fill a ``Tensor`` message: dense bytes, or CSR values with int64 index arrays."""
    tm.dtype = PROTO_DTYPE[td.dtype]
    if td.shape is not None:
        tm.shape.extend(td.shape)
    if td.sparse_crow_indices is not None and td.sparse_col_indices is not None:
        csr = tm.sparse_csr
        csr.values = td.to_bytes()
        csr.crow_indices = TensorData(td.sparse_crow_indices, "int64").to_bytes()
        csr.col_indices = TensorData(td.sparse_col_indices, "int64").to_bytes()
    else:
        tm.dense = td.to_bytes()


def read_buffer(
    data: bytes, proto_dtype: int, where: str, error: type[Exception]
) -> tuple[bytes, TensorDtype]:
    """Widen wire bytes of ``proto_dtype`` to the public dtype: int32 -> int64, bf16 -> float32."""
    itemsize = _WIRE_ITEMSIZE.get(proto_dtype)
    if itemsize is None:
        raise _error(error, f"unsupported dtype enum value {proto_dtype}", where)
    if len(data) % itemsize:
        raise _error(error, f"{len(data)} bytes is not a whole number of elements", where)
    if proto_dtype == pb.DTYPE_INT32:
        data = _packed.widen_int32(data)
    elif proto_dtype == pb.DTYPE_BFLOAT16:
        data = _packed.bfloat16_to_float32(data)
    return data, _PUBLIC_DTYPE[proto_dtype]


def tensor_from_proto(tm: Any, where: str, error: type[Exception]) -> TensorData:
    """Decode a ``Tensor`` message, keeping CSR sparse; raise ``error`` naming ``where``."""
    shape = list(tm.shape) if tm.shape else None
    try:
        if tm.WhichOneof("encoding") == "sparse_csr":
            csr = tm.sparse_csr
            values, dtype = read_buffer(csr.values, tm.dtype, where, error)
            crow = _int64_list(csr.crow_indices, where, error)
            col = _int64_list(csr.col_indices, where, error)
            return TensorData.from_bytes(values, dtype, shape or [], crow, col)
        values, dtype = read_buffer(tm.dense, tm.dtype, where, error)
        return TensorData.from_bytes(values, dtype, shape)
    except ValidationError as exc:
        if error is ValidationError:
            raise ValidationError(str(exc), field=where) from exc
        raise _error(error, str(exc), where) from exc


def _int64_list(data: bytes, where: str, error: type[Exception]) -> list[int]:
    if len(data) % 8:
        raise _error(error, "CSR index bytes are not whole int64 values", where)
    return _packed.unpack(data, "q")


def _error(error: type[Exception], message: str, where: str) -> Exception:
    if error is ValidationError:
        return ValidationError(message, field=where)
    return error(f"{where}: {message}")
