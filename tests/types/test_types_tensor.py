"""TensorData: construction from lists/numpy/bytes, views, CSR, and every rejection."""

from __future__ import annotations

import math
import struct
from array import array
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinkex_actors.errors import ValidationError
from tinkex_actors.types import TensorData

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
FLOAT32 = st.floats(width=32, allow_nan=False)


def test_dense_int64_from_list() -> None:
    td = TensorData([1, -2, 3], "int64")
    assert td.data == [1, -2, 3]
    assert td.dtype == "int64"
    assert td.shape is None
    assert td.dense_shape == (3,)
    assert td.to_bytes() == struct.pack("<3q", 1, -2, 3)
    assert td.nbytes == 24
    assert not td.is_sparse


def test_float32_values_are_rounded_to_float32() -> None:
    td = TensorData([0.1, 1, 2.5], "float32", [3])
    assert td.data == [struct.unpack("<f", struct.pack("<f", 0.1))[0], 1.0, 2.5]
    assert td.shape == (3,)


def test_nested_list_gives_shape_and_to_list_restores_it() -> None:
    td = TensorData.from_list([[1, 2, 3], [4, 5, 6]], "int64")
    assert td.shape == (2, 3)
    assert td.data == [1, 2, 3, 4, 5, 6]
    assert td.to_list() == [[1, 2, 3], [4, 5, 6]]


def test_explicit_shape_reshapes_flat_data() -> None:
    td = TensorData(list(range(6)), "int64", [3, 2])
    assert td.to_list() == [[0, 1], [2, 3], [4, 5]]


def test_zero_sized_dimensions() -> None:
    td = TensorData([], "float32", [2, 0])
    assert td.to_list() == [[], []]
    assert td.size == 0


@pytest.mark.parametrize("kind", ["int64", "int32", "uint16", "int8"])
def test_from_numpy_integer_arrays_become_int64(kind: str) -> None:
    arr = np.arange(6, dtype=kind).reshape(2, 3)
    td = TensorData.from_numpy(arr)
    assert td.dtype == "int64"
    assert td.shape == (2, 3)
    assert td.to_list() == arr.tolist()


@pytest.mark.parametrize("kind", ["float64", "float32", "float16"])
def test_from_numpy_float_arrays_become_float32(kind: str) -> None:
    arr = np.array([0.5, -1.25, 3.0], dtype=kind)
    td = TensorData.from_numpy(arr)
    assert td.dtype == "float32"
    assert td.data == [0.5, -1.25, 3.0]


def test_from_numpy_with_explicit_dtype_casts_ints_to_float() -> None:
    td = TensorData.from_numpy(np.array([1, 2], dtype=np.int64), "float32")
    assert td.dtype == "float32"
    assert td.data == [1.0, 2.0]


def test_to_numpy_is_a_read_only_zero_copy_view() -> None:
    td = TensorData(list(range(6)), "int64", [2, 3])
    arr = td.to_numpy()
    assert arr.dtype == np.dtype("<i8")
    assert arr.shape == (2, 3)
    assert not arr.flags.writeable
    assert arr.tolist() == [[0, 1, 2], [3, 4, 5]]


def test_array_module_input() -> None:
    assert TensorData(array("q", [5, 6]), "int64").data == [5, 6]
    assert TensorData(array("i", [5, 6]), "int64").data == [5, 6]
    assert TensorData(array("d", [0.5]), "float32").data == [0.5]


def test_sparse_csr_round_trip_with_pad_value() -> None:
    # [[-1, 7, -1], [-1, -1, -1], [9, -1, 8]]
    td = TensorData([7, 9, 8], "int64", [3, 3], [0, 1, 1, 3], [1, 0, 2])
    assert td.is_sparse
    assert td.to_list(pad_value=-1) == [[-1, 7, -1], [-1, -1, -1], [9, -1, 8]]
    assert td.to_numpy(pad_value=-1).tolist() == [[-1, 7, -1], [-1, -1, -1], [9, -1, 8]]
    assert td.to_list() == [[0, 7, 0], [0, 0, 0], [9, 0, 8]]


def test_from_bytes() -> None:
    td = TensorData.from_bytes(struct.pack("<2f", 1.5, 2.5), "float32", [2])
    assert td.data == [1.5, 2.5]
    with pytest.raises(ValidationError) as info:
        TensorData.from_bytes(b"\x00" * 6, "float32")
    assert info.value.field == "TensorData.data"


def test_equality_hash_and_repr() -> None:
    a = TensorData([1, 2, 3], "int64", [3])
    b = TensorData(np.array([1, 2, 3]), "int64")
    assert a == b
    assert hash(a) == hash(b)
    assert a != TensorData([1, 2, 3], "float32", [3])
    assert "int64" in repr(a)
    assert "1000 elements" in repr(TensorData(list(range(1000)), "int64"))


def test_data_returns_a_fresh_list() -> None:
    td = TensorData([1, 2], "int64")
    td.data.append(3)
    assert td.data == [1, 2]


def test_source_list_mutation_does_not_change_the_tensor() -> None:
    source = [1, 2, 3]
    td = TensorData(source, "int64")
    source[0] = 99
    assert td.data == [1, 2, 3]
    assert td.to_bytes() == struct.pack("<3q", 1, 2, 3)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"data": [1, 2], "dtype": "int32"}, "TensorData.dtype"),
        ({"data": [1, 2]}, "TensorData.dtype"),
        ({"data": [1, 2], "dtype": "int64", "shape": [3]}, "TensorData.shape"),
        ({"data": [1, 2], "dtype": "int64", "shape": [2, -1]}, "TensorData.shape"),
        ({"data": [1, 2], "dtype": "int64", "shape": [2.0]}, "TensorData.shape"),
        ({"data": [1, True], "dtype": "int64"}, "TensorData.data"),
        ({"data": [1, 2.5], "dtype": "int64"}, "TensorData.data"),
        ({"data": [1, "2"], "dtype": "int64"}, "TensorData.data"),
        ({"data": [1, None], "dtype": "float32"}, "TensorData.data"),
        ({"data": [2**63], "dtype": "int64"}, "TensorData.data"),
        ({"data": [1e39], "dtype": "float32"}, "TensorData.data"),
        ({"data": "123", "dtype": "int64"}, "TensorData.data"),
        ({"data": [[1, 2], [3]], "dtype": "int64"}, "TensorData.data"),
        ({"data": np.array([True, False]), "dtype": None}, "TensorData.data"),
        ({"data": np.array([1.5]), "dtype": "int64"}, "TensorData.data"),
        ({"data": np.array([2**64 - 1], dtype=np.uint64), "dtype": None}, "TensorData.data"),
        # CSR: indices given alone, no/1-D shape, wrong lengths, decreasing rows, column range
        (
            {"data": [1], "dtype": "int64", "shape": [1, 2], "sparse_crow_indices": [0, 1]},
            "TensorData.sparse_col_indices",
        ),
        (
            {
                "data": [1],
                "dtype": "int64",
                "sparse_crow_indices": [0, 1],
                "sparse_col_indices": [0],
            },
            "TensorData.shape",
        ),
        (
            {
                "data": [1],
                "dtype": "int64",
                "shape": [2, 2],
                "sparse_crow_indices": [0, 1],
                "sparse_col_indices": [0],
            },
            "TensorData.sparse_crow_indices",
        ),
        (
            {
                "data": [1, 2],
                "dtype": "int64",
                "shape": [2, 2],
                "sparse_crow_indices": [0, 2, 1],
                "sparse_col_indices": [0, 1],
            },
            "TensorData.sparse_crow_indices",
        ),
        (
            {
                "data": [1, 2],
                "dtype": "int64",
                "shape": [2, 2],
                "sparse_crow_indices": [0, 1, 2],
                "sparse_col_indices": [0],
            },
            "TensorData.sparse_col_indices",
        ),
        (
            {
                "data": [1, 2],
                "dtype": "int64",
                "shape": [2, 2],
                "sparse_crow_indices": [0, 1, 2],
                "sparse_col_indices": [0, 2],
            },
            "TensorData.sparse_col_indices",
        ),
    ],
)
def test_rejections_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        TensorData(**kwargs)
    assert info.value.field == field


def test_bool_error_names_the_element() -> None:
    with pytest.raises(ValidationError, match="element 2 is a bool"):
        TensorData([0, 1, False], "int64")


def test_from_numpy_rejects_lists() -> None:
    with pytest.raises(ValidationError):
        TensorData.from_numpy([1, 2])  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(st.lists(INT64, max_size=50))
def test_int64_list_round_trip(values: list[int]) -> None:
    td = TensorData(values, "int64")
    assert td.data == values
    assert td.to_bytes() == struct.pack(f"<{len(values)}q", *values)
    assert TensorData.from_bytes(td.to_bytes(), "int64") == td


@settings(max_examples=60, deadline=None)
@given(st.lists(FLOAT32, max_size=50))
def test_float32_list_round_trip(values: list[float]) -> None:
    td = TensorData(values, "float32")
    assert td.data == values  # float32-representable values come back exactly
    assert np.array_equal(td.to_numpy(), np.asarray(values, dtype=np.float32))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(allow_nan=False, min_value=-1e30, max_value=1e30), max_size=30))
def test_float64_values_are_stored_as_float32(values: list[float]) -> None:
    td = TensorData(values, "float32")
    expected = [float(np.float32(v)) for v in values]
    assert td.data == expected
    assert all(math.isfinite(x) for x in td.data)
