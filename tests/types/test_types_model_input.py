"""ModelInput and its chunks: helpers, lengths, and rejected input."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinkex_actors.errors import ValidationError
from tinkex_actors.types import (
    DmelChunk,
    EncodedTextChunk,
    ImageAssetPointerChunk,
    ImageChunk,
    ModelInput,
)

TOKEN = st.integers(min_value=0, max_value=2**31 - 1)
# A TensorContainer header: dtype byte 1, ndim 2, dims 7 x 3 (then payload bytes).
DMEL = bytes([1, 2, 7, 3]) + b"\x00" * 21


def test_from_ints_to_ints_length() -> None:
    mi = ModelInput.from_ints([5, 6, 7])
    assert mi.to_ints() == [5, 6, 7]
    assert mi.length == 3
    assert len(mi.chunks) == 1
    assert isinstance(mi.chunks[0], EncodedTextChunk)
    assert mi.chunks[0].tokens == [5, 6, 7]
    assert mi.chunks[0].to_bytes() == struct.pack("<3i", 5, 6, 7)


def test_from_numpy_tokens() -> None:
    mi = ModelInput.from_ints(np.array([1, 2, 3], dtype=np.int64))
    assert mi.to_ints() == [1, 2, 3]
    assert mi == ModelInput.from_ints([1, 2, 3])


def test_empty_append_append_int() -> None:
    mi = ModelInput.empty()
    assert mi.length == 0
    assert mi.to_ints() == []
    mi = mi.append_int(4)
    assert mi.to_ints() == [4]
    mi = mi.append(EncodedTextChunk([5, 6])).append_int(7)
    assert mi.to_ints() == [4, 5, 6, 7]
    # append_int extends a trailing text chunk instead of adding one chunk per token
    assert [c.length for c in mi.chunks] == [1, 3]


def test_append_returns_new_objects() -> None:
    first = ModelInput.from_ints([1])
    second = first.append_int(2)
    assert first.to_ints() == [1]
    assert second.to_ints() == [1, 2]


def test_mixed_chunks_length_and_to_ints() -> None:
    image = ImageChunk(data=b"\x89PNG", format="png", expected_tokens=10)
    mi = ModelInput([EncodedTextChunk([1, 2]), image, DmelChunk(dmel=DMEL)])
    assert mi.length == 2 + 10 + 7
    with pytest.raises(ValidationError) as info:
        mi.to_ints()
    assert info.value.field == "ModelInput.chunks[1]"


def test_image_without_expected_tokens_has_no_length() -> None:
    for chunk in (
        ImageChunk(data=b"x", format="jpeg"),
        ImageAssetPointerChunk(format="png", location="s3://bucket/a.png"),
    ):
        with pytest.raises(ValidationError, match="expected_tokens"):
            _ = ModelInput([chunk]).length


def test_tokens_property_is_a_copy() -> None:
    chunk = EncodedTextChunk([1, 2])
    chunk.tokens.append(3)
    assert chunk.tokens == [1, 2]


def test_equality_and_hash() -> None:
    assert ModelInput.from_ints([1, 2]) == ModelInput([EncodedTextChunk([1, 2])])
    assert hash(ModelInput.from_ints([1, 2])) == hash(ModelInput.from_ints([1, 2]))
    assert ModelInput.from_ints([1, 2]) != ModelInput.from_ints([2, 1])


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: ModelInput.from_ints([1, 2.0]), "ModelInput.tokens"),
        (lambda: ModelInput.from_ints([1, True]), "ModelInput.tokens"),
        (lambda: ModelInput.from_ints([2**31]), "ModelInput.tokens"),
        (lambda: ModelInput.from_ints([[1, 2]]), "ModelInput.tokens"),
        (lambda: ModelInput.from_ints(np.array([[1, 2]])), "ModelInput.tokens"),
        (lambda: ModelInput.from_ints(np.array([0.5])), "ModelInput.tokens"),
        (lambda: ModelInput.from_ints(np.array([2**40])), "ModelInput.tokens"),
        (lambda: EncodedTextChunk(["1"]), "EncodedTextChunk.tokens"),
        (lambda: EncodedTextChunk([1], type="image"), "EncodedTextChunk.type"),  # type: ignore[arg-type]
        (lambda: ModelInput([1, 2]), "ModelInput.chunks[0]"),  # type: ignore[list-item]
        (lambda: ModelInput("abc"), "ModelInput.chunks"),  # type: ignore[arg-type]
        (lambda: ImageChunk(data="abc", format="png"), "ImageChunk.data"),  # type: ignore[arg-type]
        (lambda: ImageChunk(data=b"abc", format="gif"), "ImageChunk.format"),  # type: ignore[arg-type]
        (
            lambda: ImageChunk(data=b"a", format="png", expected_tokens=-1),
            "ImageChunk.expected_tokens",
        ),
        (
            lambda: ImageAssetPointerChunk(format="png", location=""),
            "ImageAssetPointerChunk.location",
        ),
        (lambda: DmelChunk(dmel=b""), "DmelChunk.dmel"),
        (lambda: DmelChunk(dmel=bytes([9, 1, 1])), "DmelChunk.dmel"),
        (lambda: DmelChunk(dmel=bytes([1, 2, 0x80])), "DmelChunk.dmel"),
        (lambda: EncodedTextChunk.from_bytes(b"\x00\x01\x02"), "EncodedTextChunk.tokens"),
    ],
)
def test_rejections_name_the_field(build: Any, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        build()
    assert info.value.field == field


def test_dmel_with_constant_marker() -> None:
    assert DmelChunk(dmel=bytes([254, 1, 1, 4])).length == 4


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(TOKEN, max_size=20), max_size=5))
def test_chunks_concatenate(runs: list[list[int]]) -> None:
    mi = ModelInput([EncodedTextChunk(run) for run in runs])
    flat = [t for run in runs for t in run]
    assert mi.to_ints() == flat
    assert mi.length == len(flat)
    assert ModelInput.from_ints(flat).to_ints() == flat
