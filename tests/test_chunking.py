"""forward_backward chunking: limits, the byte estimate, and the official SDK as oracle."""

from __future__ import annotations

import itertools
from types import SimpleNamespace
from typing import Any

import pytest
import tinker.types as T  # noqa: N812 - short oracle prefix
from hypothesis import given, settings
from hypothesis import strategies as st
from tinker.lib.public_interfaces.training_client import (
    TrainingClient,
    _estimate_datum_bytes_count_proto,
)

from tinkex_actors._chunking import ChunkLimits, chunk_data, datum_tokens, estimate_datum_bytes
from tinkex_actors._constants import CHUNK_MAX_DATUMS, CHUNK_MAX_TOKENS
from tinkex_actors.errors import ValidationError
from tinkex_actors.types import (
    ClientConfigResponse,
    Datum,
    DmelChunk,
    ImageAssetPointerChunk,
    ImageChunk,
    ModelInput,
    TensorData,
)

DMEL = bytes([1, 1, 5]) + b"\x00" * 20


def datum(n: int) -> Datum:
    return Datum(
        ModelInput.from_ints(list(range(n))),
        {"target_tokens": list(range(n)), "weights": [1.0] * n},
    )


@st.composite
def batches(draw: Any) -> list[Datum]:
    return [datum(n) for n in draw(st.lists(st.integers(0, 40), max_size=30))]


limits_st = st.builds(
    ChunkLimits,
    max_datums=st.integers(1, 8),
    max_tokens=st.none() | st.integers(1, 100),
    max_bytes=st.none() | st.integers(1, 2000),
)


@settings(max_examples=80, deadline=None)
@given(batches(), limits_st)
def test_chunks_respect_the_limits_and_keep_order(data: list[Datum], limits: ChunkLimits) -> None:
    chunks = chunk_data(data, limits)
    assert [d for chunk in chunks for d in chunk] == data  # concatenation preserves order
    assert all(chunks)
    for chunk in chunks:
        assert len(chunk) <= limits.max_datums
        if len(chunk) > 1:  # only a single oversize datum may exceed a budget
            if limits.max_tokens is not None:
                assert sum(datum_tokens(d) for d in chunk) <= limits.max_tokens
            if limits.max_bytes is not None:
                assert sum(estimate_datum_bytes(d) for d in chunk) <= limits.max_bytes
    # greedy: each chunk closed only because its next datum would not fit
    for chunk, following in itertools.pairwise(chunks):
        grown = [*chunk, following[0]]
        assert (
            len(grown) > limits.max_datums
            or (limits.max_tokens is not None and sum(map(datum_tokens, grown)) > limits.max_tokens)
            or (
                limits.max_bytes is not None
                and sum(map(estimate_datum_bytes, grown)) > limits.max_bytes
            )
        )


def _official_chunks(data: list[Any], max_len: int, max_bytes: int) -> list[list[Any]]:
    # The official generator reads its limits from the holder's client config; give it one.
    fake_self = SimpleNamespace(
        holder=SimpleNamespace(
            _client_config=SimpleNamespace(
                fwdbwd_max_chunk_len=max_len, fwdbwd_max_chunk_bytes_count=max_bytes
            )
        )
    )
    return [chunk.data for chunk in TrainingClient._chunked_requests_generator(fake_self, data)]  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 40), max_size=25), st.integers(1, 6), st.integers(1, 1500))
def test_byte_chunking_matches_the_official_sdk(
    lengths: list[int], max_len: int, max_bytes: int
) -> None:
    ours = [datum(n) for n in lengths]
    theirs = [
        T.Datum(
            model_input=T.ModelInput.from_ints(list(range(n))),
            loss_fn_inputs={"target_tokens": list(range(n)), "weights": [1.0] * n},
        )
        for n in lengths
    ]
    limits = ChunkLimits.from_client_config(
        ClientConfigResponse(fwdbwd_max_chunk_len=max_len, fwdbwd_max_chunk_bytes_count=max_bytes)
    )
    assert [len(c) for c in chunk_data(ours, limits)] == [
        len(c) for c in _official_chunks(theirs, max_len, max_bytes)
    ]


def test_byte_estimate_matches_the_official_sdk() -> None:
    ours = Datum(
        ModelInput(
            [
                ModelInput.from_ints([1, 2, 3]).chunks[0],
                ImageChunk(data=b"x" * 17, format="png"),
                ImageAssetPointerChunk(format="jpeg", location="s3://bucket/key.jpg"),
                DmelChunk(dmel=DMEL),
            ]
        ),
        {
            "target_tokens": [1, 2, 3],
            "weights": [1.0, 0.0, 1.0],
            "m": TensorData([4, 5], "int64", [2, 2], [0, 1, 2], [1, 0]),
        },
    )
    theirs = T.Datum(
        model_input=T.ModelInput(
            chunks=[
                T.EncodedTextChunk(tokens=[1, 2, 3]),
                T.ImageChunk(data=b"x" * 17, format="png"),
                T.ImageAssetPointerChunk(format="jpeg", location="s3://bucket/key.jpg"),
                T.DmelChunk(dmel=DMEL),
            ]
        ),
        loss_fn_inputs={
            "target_tokens": [1, 2, 3],
            "weights": [1.0, 0.0, 1.0],
            "m": T.TensorData(
                data=[4, 5],
                dtype="int64",
                shape=[2, 2],
                sparse_crow_indices=[0, 1, 2],
                sparse_col_indices=[1, 0],
            ),
        },
    )
    assert estimate_datum_bytes(ours) == _estimate_datum_bytes_count_proto(theirs)
    assert datum_tokens(ours) == 3 + 0 + 0 + 5


def test_seed_defaults_and_client_config() -> None:
    assert ChunkLimits() == ChunkLimits(
        max_datums=CHUNK_MAX_DATUMS, max_tokens=CHUNK_MAX_TOKENS, max_bytes=None
    )
    assert ChunkLimits.from_client_config(None) == ChunkLimits()
    assert ChunkLimits.from_client_config(ClientConfigResponse()) == ChunkLimits()
    assert ChunkLimits.from_client_config(
        ClientConfigResponse(fwdbwd_max_chunk_len=1024)
    ) == ChunkLimits(max_datums=1024)
    assert ChunkLimits.from_client_config(
        ClientConfigResponse(fwdbwd_max_chunk_bytes_count=5_000_000)
    ) == ChunkLimits(max_tokens=None, max_bytes=5_000_000)


def test_seed_limits_split_by_datums_and_by_tokens() -> None:
    assert [len(c) for c in chunk_data([datum(1)] * 300)] == [128, 128, 44]
    big = [datum(200_000)] * 3  # 200k tokens each: two fit under 500k, the third does not
    assert [len(c) for c in chunk_data(big)] == [2, 1]
    oversize = [datum(10), datum(600_000), datum(10)]
    assert [len(c) for c in chunk_data(oversize)] == [1, 1, 1]


def test_empty_input_and_bad_limits() -> None:
    assert chunk_data([]) == []
    with pytest.raises(ValidationError) as info:
        ChunkLimits(max_datums=0)
    assert info.value.field == "ChunkLimits.max_datums"
    with pytest.raises(ValidationError):
        ChunkLimits(max_bytes=-1)
