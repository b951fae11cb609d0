"""TensorData: a flat int64/float32 tensor, dense or sparse CSR, as the wire carries it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, cast, get_args

import attrs

from tinkex_actors.errors import ValidationError
from tinkex_actors.types import _packed
from tinkex_actors.types._validate import is_int, type_name

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["TensorData", "TensorDtype"]

#: The two dtypes of the public wire.
TensorDtype: TypeAlias = Literal["int64", "float32"]
_DTYPES: tuple[str, ...] = get_args(TensorDtype)
_REPR_ITEMS = 8


@attrs.frozen(init=False, repr=False)
class TensorData:
    """A tensor in one of the wire dtypes, stored packed (little-endian) and immutable.

    Dense: ``data`` lists every element row-major; ``shape`` is optional (``None`` means a
    1-D tensor of ``len(data)`` elements). Sparse CSR (2-D only): ``data`` lists the stored
    values, ``sparse_crow_indices`` the row pointers (``rows + 1`` entries, starting at 0,
    non-decreasing, ending at ``len(data)``), ``sparse_col_indices`` one column per value;
    ``shape`` is required. Unlisted cells take the ``pad_value`` given to :meth:`to_list` /
    :meth:`to_numpy`.

    Args:
        data: numbers (a flat or rectangular nested list, a tuple, an ``array.array``), or a
            numpy array (then ``dtype`` may be left out: float arrays become ``float32``,
            integer arrays ``int64``).
        dtype: ``"int64"`` or ``"float32"``.
        shape: the dense shape; for a nested list or an array it is taken from the data.
        sparse_crow_indices: CSR row pointers.
        sparse_col_indices: CSR column indices.

    Raises:
        ValidationError: wrong dtype, a non-numeric or out-of-range element, a bool where an
            integer is expected, a shape that does not match the data, inconsistent CSR indices.
    """

    _buf: bytes
    dtype: TensorDtype
    shape: tuple[int, ...] | None
    sparse_crow_indices: tuple[int, ...] | None
    sparse_col_indices: tuple[int, ...] | None

    def __init__(
        self,
        data: Sequence[float] | npt.NDArray[Any] | Any,
        dtype: TensorDtype | None = None,
        shape: Sequence[int] | None = None,
        sparse_crow_indices: Sequence[int] | None = None,
        sparse_col_indices: Sequence[int] | None = None,
    ) -> None:
        if dtype is not None and dtype not in _DTYPES:
            raise ValidationError(
                f"must be 'int64' or 'float32', got {dtype!r}", field="TensorData.dtype"
            )
        if _packed.is_torch_tensor(data):
            data = _packed.torch_to_numpy(data)
        if _packed.is_ndarray(data):
            code = None if dtype is None else _packed.CODE[dtype]
            buf, code, data_shape = _packed.pack_ndarray(data, code, "TensorData.data")
            dtype = "float32" if code == "f" else "int64"
            inferred: tuple[int, ...] | None = data_shape
        else:
            if dtype is None:
                raise ValidationError(
                    "required unless data is a numpy array", field="TensorData.dtype"
                )
            buf, data_shape = _packed.pack_sequence(
                cast("Sequence[Any]", data), _packed.CODE[dtype], "TensorData.data"
            )
            inferred = data_shape if len(data_shape) > 1 else None
        crow = _index_tuple(sparse_crow_indices, "TensorData.sparse_crow_indices")
        col = _index_tuple(sparse_col_indices, "TensorData.sparse_col_indices")
        if shape is not None:
            dims = _index_tuple(shape, "TensorData.shape")
        elif crow is None and inferred is not None:
            dims = inferred
        else:
            dims = None
        _check_layout(_packed.count(buf, _packed.CODE[dtype]), dims, crow, col)
        self.__attrs_init__(buf, dtype, dims, crow, col)

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_list(
        cls,
        data: Sequence[float],
        dtype: TensorDtype,
        shape: Sequence[int] | None = None,
    ) -> TensorData:
        """A dense tensor from a flat or rectangular nested list (nested lists give the shape)."""
        return cls(data, dtype, shape)

    @classmethod
    def from_numpy(cls, array: npt.NDArray[Any], dtype: TensorDtype | None = None) -> TensorData:
        """A dense tensor from a numpy array, keeping its shape.

        ``dtype`` defaults to the array's kind (floats -> ``float32``, integers -> ``int64``).
        Needs numpy (``pip install tinkex_actors[numpy]``).
        """
        if not _packed.is_ndarray(array):
            raise ValidationError(
                f"expected a numpy array, got {type_name(array)}", field="TensorData.data"
            )
        return cls(array, dtype)

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        dtype: TensorDtype,
        shape: Sequence[int] | None = None,
        sparse_crow_indices: Sequence[int] | None = None,
        sparse_col_indices: Sequence[int] | None = None,
    ) -> TensorData:
        """A tensor from packed little-endian bytes (8 per int64, 4 per float32 element)."""
        if dtype not in _DTYPES:
            raise ValidationError(
                f"must be 'int64' or 'float32', got {dtype!r}", field="TensorData.dtype"
            )
        if not isinstance(cast(object, data), bytes | bytearray | memoryview):
            raise ValidationError(f"expected bytes, got {type_name(data)}", field="TensorData.data")
        buf = bytes(data)
        size = _packed.ITEMSIZE[_packed.CODE[dtype]]
        if len(buf) % size:
            raise ValidationError(
                f"{len(buf)} bytes is not a whole number of {dtype} elements",
                field="TensorData.data",
            )
        dims = None if shape is None else _index_tuple(shape, "TensorData.shape")
        crow = _index_tuple(sparse_crow_indices, "TensorData.sparse_crow_indices")
        col = _index_tuple(sparse_col_indices, "TensorData.sparse_col_indices")
        _check_layout(len(buf) // size, dims, crow, col)
        return cls._trusted(buf, dtype, dims, crow, col)

    @classmethod
    def _trusted(
        cls,
        buf: bytes,
        dtype: TensorDtype,
        shape: tuple[int, ...] | None,
        crow: tuple[int, ...] | None = None,
        col: tuple[int, ...] | None = None,
    ) -> TensorData:
        # For callers that already checked the layout: skips every validation.
        self = object.__new__(cls)
        self.__attrs_init__(buf, dtype, shape, crow, col)
        return self

    # ------------------------------------------------------------------ views

    @property
    def data(self) -> list[Any]:
        """The stored elements as a new flat list (the CSR values when sparse)."""
        return _packed.unpack(self._buf, _packed.CODE[self.dtype])

    @property
    def is_sparse(self) -> bool:
        """True for a CSR tensor."""
        return self.sparse_crow_indices is not None

    @property
    def size(self) -> int:
        """Number of stored elements (``len(data)``)."""
        return _packed.count(self._buf, _packed.CODE[self.dtype])

    @property
    def nbytes(self) -> int:
        """Size of the packed stored elements in bytes."""
        return len(self._buf)

    @property
    def dense_shape(self) -> tuple[int, ...]:
        """The shape, or ``(size,)`` when none was given."""
        return self.shape if self.shape is not None else (self.size,)

    def to_bytes(self) -> bytes:
        """The stored elements packed little-endian (what the protobuf wire carries)."""
        return self._buf

    def to_list(self, pad_value: float = 0) -> list[Any]:
        """The dense tensor as nested lists following ``shape`` (CSR cells get ``pad_value``)."""
        return _reshape(self._dense_flat(pad_value), self.dense_shape)

    def to_numpy(self, pad_value: float = 0) -> np.ndarray[Any, Any]:
        """The dense tensor as a numpy array of ``shape`` (read-only unless sparse).

        A dense tensor is returned as a zero-copy, read-only view of the packed buffer; call
        ``.copy()`` for a writable array. Needs numpy.
        """
        import numpy as np

        np_dtype = np.dtype("<i8" if self.dtype == "int64" else "<f4")
        values = np.frombuffer(self._buf, dtype=np_dtype)
        if self.sparse_crow_indices is None:
            return values.reshape(self.dense_shape)
        rows, cols = self.dense_shape
        dense = np.full(rows * cols, pad_value, dtype=np_dtype)
        crow = np.asarray(self.sparse_crow_indices, dtype=np.int64)
        col = np.asarray(self.sparse_col_indices, dtype=np.int64)
        row_of = np.repeat(np.arange(rows, dtype=np.int64), np.diff(crow))
        dense[row_of * cols + col] = values
        return dense.reshape(rows, cols)

    def _dense_flat(self, pad_value: float) -> list[Any]:
        values = self.data
        if self.sparse_crow_indices is None or self.sparse_col_indices is None:
            return values
        rows, cols = self.dense_shape
        if self.dtype == "int64" and not float(pad_value).is_integer():
            raise ValidationError(
                "must be an integer for an int64 tensor", field="TensorData.pad_value"
            )
        pad: float = int(pad_value) if self.dtype == "int64" else float(pad_value)
        dense: list[Any] = [pad] * (rows * cols)
        crow = self.sparse_crow_indices
        col = self.sparse_col_indices
        for r in range(rows):
            base = r * cols
            for k in range(crow[r], crow[r + 1]):
                dense[base + col[k]] = values[k]
        return dense

    def __repr__(self) -> str:
        values = self.data
        shown = ", ".join(repr(v) for v in values[:_REPR_ITEMS])
        if len(values) > _REPR_ITEMS:
            shown += f", ... ({len(values)} elements)"
        parts = [f"dtype={self.dtype!r}"]
        if self.shape is not None:
            parts.append(f"shape={self.shape!r}")
        if self.sparse_crow_indices is not None:
            parts.append("sparse=CSR")
        parts.append(f"data=[{shown}]")
        return f"TensorData({', '.join(parts)})"


def _reshape(flat: list[Any], shape: tuple[int, ...]) -> list[Any]:
    if len(shape) <= 1:
        return flat
    step = math.prod(shape[1:])
    return [_reshape(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def _index_tuple(values: Sequence[int] | None, field: str) -> tuple[int, ...] | None:
    """A tuple of non-negative ints, or None."""
    if values is None:
        return None
    if _packed.is_ndarray(values):
        values = cast(Any, values).tolist()
    raw: object = values
    if isinstance(raw, str | bytes) or not isinstance(raw, Sequence):
        raise ValidationError(f"expected a list of integers, got {type_name(values)}", field=field)
    for i, v in enumerate(values):
        if not is_int(v):
            raise ValidationError(
                f"element {i} is a {type_name(v)}; expected an integer", field=field
            )
        if v < 0:
            raise ValidationError(f"element {i} is negative ({v})", field=field)
    return tuple(int(v) for v in values)


def _check_layout(
    n: int,
    shape: tuple[int, ...] | None,
    crow: tuple[int, ...] | None,
    col: tuple[int, ...] | None,
) -> None:
    """Raise unless the element count, shape and CSR indices agree."""
    if (crow is None) != (col is None):
        missing = "sparse_col_indices" if col is None else "sparse_crow_indices"
        raise ValidationError(
            "sparse_crow_indices and sparse_col_indices must be given together",
            field=f"TensorData.{missing}",
        )
    if crow is None or col is None:
        if shape is not None and math.prod(shape) != n:
            raise ValidationError(
                f"shape {list(shape)} holds {math.prod(shape)} elements but data has {n}",
                field="TensorData.shape",
            )
        return
    if shape is None or len(shape) != 2:
        raise ValidationError(
            "a sparse CSR tensor needs a 2-D shape [rows, cols]", field="TensorData.shape"
        )
    rows, cols = shape
    if len(crow) != rows + 1:
        raise ValidationError(
            f"must have rows + 1 = {rows + 1} entries, got {len(crow)}",
            field="TensorData.sparse_crow_indices",
        )
    if crow[0] != 0 or crow[-1] != n or list(crow) != sorted(crow):
        raise ValidationError(
            f"must start at 0, never decrease, and end at the number of values ({n})",
            field="TensorData.sparse_crow_indices",
        )
    if len(col) != n:
        raise ValidationError(
            f"must have one entry per value ({n}), got {len(col)}",
            field="TensorData.sparse_col_indices",
        )
    if col and max(col) >= cols:
        raise ValidationError(
            f"column index {max(col)} is outside the {cols} columns",
            field="TensorData.sparse_col_indices",
        )
