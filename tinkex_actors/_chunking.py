"""Splitting a forward_backward batch into requests (protocol §5.4).

Datums are packed greedily in order. A chunk closes when it holds ``max_datums`` datums, or
when the next datum would push it over ``max_tokens`` (the seed's budget) or ``max_bytes``
(the budget a server announces in ``client/config``, measured with the official SDK's
estimate). A datum that alone exceeds a budget forms its own chunk. Pure functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from tinkex_actors._constants import (
    CHUNK_MAX_DATUMS,
    CHUNK_MAX_TOKENS,
    FWDBWD_BYTES_PER_TOKEN,
    FWDBWD_SPARSE_INDEX_BYTES,
)
from tinkex_actors.types import _validate as v
from tinkex_actors.types._datum import Datum
from tinkex_actors.types._model_input import (
    DmelChunk,
    EncodedTextChunk,
    ImageAssetPointerChunk,
    ImageChunk,
)
from tinkex_actors.types._service import ClientConfigResponse

__all__ = ["ChunkLimits", "chunk_data", "datum_tokens", "estimate_datum_bytes"]


@attrs.frozen(kw_only=True)
class ChunkLimits:
    """Per-request limits of a forward_backward chunk.

    Attributes:
        max_datums: most datums per request (>= 1).
        max_tokens: most model-input tokens per request, or None for no token budget.
        max_bytes: most estimated bytes per request (:func:`estimate_datum_bytes`), or None.
    """

    max_datums: int = attrs.field(default=CHUNK_MAX_DATUMS, validator=v.int_field(minimum=1))
    max_tokens: int | None = attrs.field(
        default=CHUNK_MAX_TOKENS, validator=v.int_field(minimum=1, optional=True)
    )
    max_bytes: int | None = attrs.field(
        default=None, validator=v.int_field(minimum=1, optional=True)
    )

    @classmethod
    def from_client_config(cls, config: ClientConfigResponse | None) -> ChunkLimits:
        """The limits to use with a server.

        What the server announces wins: ``fwdbwd_max_chunk_len`` replaces the datum limit and
        ``fwdbwd_max_chunk_bytes_count`` becomes the byte budget (replacing the token budget).
        Without an announcement the seed defaults apply (``CHUNK_MAX_DATUMS`` datums,
        ``CHUNK_MAX_TOKENS`` tokens).
        """
        if config is None:
            return cls()
        max_datums = config.fwdbwd_max_chunk_len or CHUNK_MAX_DATUMS
        if config.fwdbwd_max_chunk_bytes_count is not None:
            return cls(
                max_datums=max_datums,
                max_tokens=None,
                max_bytes=config.fwdbwd_max_chunk_bytes_count,
            )
        return cls(max_datums=max_datums)


def datum_tokens(datum: Datum) -> int:
    """Model-input tokens of a datum (images count their ``expected_tokens``, or 0)."""
    total = 0
    for chunk in datum.model_input.chunks:
        if isinstance(chunk, EncodedTextChunk | DmelChunk):
            total += chunk.length
        else:
            total += chunk.expected_tokens or 0
    return total


def estimate_datum_bytes(datum: Datum) -> int:
    """The official SDK's size estimate of a datum on the protobuf wire.

    4 bytes per text token, the raw size of image and DMel bytes, the location length of an
    image pointer, and for each loss input its packed size plus 8 bytes per CSR index.
    """
    total = 0
    for chunk in datum.model_input.chunks:
        if isinstance(chunk, EncodedTextChunk):
            total += chunk.length * FWDBWD_BYTES_PER_TOKEN
        elif isinstance(chunk, ImageChunk):
            total += len(chunk.data)
        elif isinstance(chunk, DmelChunk):
            total += len(chunk.dmel)
        elif isinstance(chunk, ImageAssetPointerChunk):
            total += len(chunk.location)
    for td in datum.loss_fn_inputs.values():
        total += td.nbytes
        if td.sparse_crow_indices is not None:
            total += FWDBWD_SPARSE_INDEX_BYTES * len(td.sparse_crow_indices)
        if td.sparse_col_indices is not None:
            total += FWDBWD_SPARSE_INDEX_BYTES * len(td.sparse_col_indices)
    return total


def chunk_data(data: Sequence[Datum], limits: ChunkLimits | None = None) -> list[list[Datum]]:
    """Split ``data`` into consecutive chunks within ``limits`` (order preserved).

    Returns:
        The chunks; concatenated they are ``data``. Empty input gives no chunks.
    """
    limits = limits or ChunkLimits()
    check_tokens = limits.max_tokens is not None
    check_bytes = limits.max_bytes is not None
    max_tokens = limits.max_tokens or 0
    max_bytes = limits.max_bytes or 0
    chunks: list[list[Datum]] = []
    current: list[Datum] = []
    tokens = size = 0
    for datum in data:
        datum_t = datum_tokens(datum) if check_tokens else 0
        datum_b = estimate_datum_bytes(datum) if check_bytes else 0
        if current and (
            len(current) >= limits.max_datums
            or (check_tokens and tokens + datum_t > max_tokens)
            or (check_bytes and size + datum_b > max_bytes)
        ):
            chunks.append(current)
            current, tokens, size = [], 0, 0
        current.append(datum)
        tokens += datum_t
        size += datum_b
    if current:
        chunks.append(current)
    return chunks
