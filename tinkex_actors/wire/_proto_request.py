"""Protobuf codec of forward / forward_backward requests (protocol §3.4, §4.4).

The official SDK sends every forward and forward_backward as a ``ForwardBackwardRequest``
message. Token ids and tensors are already packed little-endian inside the wire types, so
encoding copies bytes into the message and never touches individual numbers.
"""

from __future__ import annotations

import struct
import threading
from typing import Any

from google.protobuf.message import DecodeError

from tinkex_actors.errors import ValidationError
from tinkex_actors.types._datum import Datum, PromptProvenanceSpan, SampledProvenanceSpan
from tinkex_actors.types._model_input import (
    DmelChunk,
    EncodedTextChunk,
    ImageChunk,
    ModelInput,
    ModelInputChunk,
)
from tinkex_actors.types._tensor import TensorData
from tinkex_actors.types._training import (
    ForwardBackwardInput,
    ForwardBackwardRequest,
    ForwardRequest,
)
from tinkex_actors.wire import tinker_public_pb2 as pb
from tinkex_actors.wire._protowriter import Message, tag, varint
from tinkex_actors.wire._tensors import PROTO_DTYPE, tensor_from_proto

__all__ = ["decode_forward_backward_request", "encode_forward_backward_request"]

_INT32_MAX = 2**31 - 1
_INT64 = struct.Struct("<q")


def encode_forward_backward_request(
    request: ForwardBackwardRequest | ForwardRequest, *, forward_only: bool | None = None
) -> bytes:
    """Serialize a forward_backward (or forward) request to protobuf bytes.

    Args:
        request: a :class:`ForwardBackwardRequest`, or a :class:`ForwardRequest` (encoded as a
            forward-only ForwardBackwardRequest, which is how current SDKs send forwards).
        forward_only: override the pass kind (default: False for ForwardBackwardRequest, True
            for ForwardRequest).

    Numeric ``loss_fn_config`` values go to both ``loss_fn_config`` and ``loss_fn_config_v2``,
    strings only to ``loss_fn_config_v2``. A missing ``seq_id`` is sent as 0.

    Raises:
        ValidationError: an image-asset-pointer chunk (protobuf carries images inline only) or
            a seq_id beyond int32.
    """
    if isinstance(request, ForwardRequest):
        fbi = request.forward_input
        only = True if forward_only is None else forward_only
    elif isinstance(request, ForwardBackwardRequest):
        fbi = request.forward_backward_input
        only = bool(forward_only)
    else:
        raise ValidationError(
            f"expected ForwardBackwardRequest or ForwardRequest, got {type(request).__name__}",
            field="request",
        )
    seq_id = request.seq_id or 0
    if seq_id > _INT32_MAX:
        raise ValidationError(
            f"must fit in int32, got {seq_id}", field="ForwardBackwardRequest.seq_id"
        )
    # Field numbers: see tinker_public.proto (ForwardBackwardRequest and below).
    msg = Message()
    if request.model_id:
        msg.string_field(1, request.model_id)
    if seq_id:
        msg.varint_field(2, seq_id)
    for index, datum in enumerate(fbi.data):
        msg.message_field(3, _datum(datum, index))
    msg.string_field(4, fbi.loss_fn)
    if fbi.loss_fn_config:
        for key, value in fbi.loss_fn_config.items():
            if isinstance(value, str):
                continue
            entry = Message()
            entry.string_field(1, key)
            entry.double_field(2, float(value))
            msg.message_field(5, entry)
    if only:
        msg.varint_field(6, 1)
    if fbi.loss_fn_config:
        for key, value in fbi.loss_fn_config.items():
            config_value = Message()
            if isinstance(value, str):
                config_value.string_field(2, value)
            else:
                config_value.double_field(1, float(value))
            entry = Message()
            entry.string_field(1, key)
            entry.message_field(2, config_value)
            msg.message_field(7, entry)
    return msg.to_bytes()


def _datum(datum: Datum, index: int) -> Message:
    dm = Message()
    for chunk in datum.model_input.chunks:
        dm.message_field(1, _chunk(chunk, index))
    for name, td in datum.loss_fn_inputs.items():
        entry = Message()
        entry.string_field(1, name)
        entry.message_field(2, _tensor(td))
        dm.message_field(2, entry)
    if datum.model_input_spans is not None and datum.loss_fn_input_spans is not None:
        for span in datum.model_input_spans:
            dm.message_field(3, _span(span))
        for span in datum.loss_fn_input_spans:
            dm.message_field(4, _span(span))
    return dm


def _chunk(chunk: ModelInputChunk, index: int) -> Message:
    cm = Message()
    inner = Message()
    if type(chunk) is EncodedTextChunk:
        tokens = chunk.to_bytes()
        if tokens:
            inner.bytes_field(1, tokens)
        cm.message_field(1, inner)
    elif isinstance(chunk, ImageChunk):
        if chunk.data:
            inner.bytes_field(1, chunk.data)
        inner.string_field(2, chunk.format)
        if chunk.expected_tokens is not None:
            inner.varint_field(3, chunk.expected_tokens)
        cm.message_field(2, inner)
    elif isinstance(chunk, DmelChunk):
        if chunk.dmel:
            inner.bytes_field(1, chunk.dmel)
        cm.message_field(3, inner)
    else:
        raise ValidationError(
            "image_asset_pointer chunks cannot be sent as protobuf; use an ImageChunk with the "
            "image bytes",
            field=f"data[{index}].model_input",
        )
    return cm


def _tensor(td: TensorData) -> Message:
    tm = Message()
    if td.sparse_crow_indices is not None and td.sparse_col_indices is not None:
        csr = Message()
        values = td.to_bytes()
        if values:
            csr.bytes_field(1, values)
        csr.bytes_field(2, _int64_bytes(td.sparse_crow_indices))
        if td.sparse_col_indices:
            csr.bytes_field(3, _int64_bytes(td.sparse_col_indices))
        tm.message_field(2, csr)
    else:
        tm.bytes_field(1, td.to_bytes())
    tm.varint_field(3, PROTO_DTYPE[td.dtype])
    if td.shape is not None:
        tm.packed_varints(4, td.shape)
    return tm


def _int64_bytes(values: tuple[int, ...]) -> bytes:
    return _INT64.pack(*values) if len(values) == 1 else struct.pack(f"<{len(values)}q", *values)


def _span(span: PromptProvenanceSpan | SampledProvenanceSpan) -> Message:
    inner = Message()
    if span.sequence_id:
        inner.string_field(1, span.sequence_id)
    if span.offset:
        inner.varint_field(2, span.offset)
    if span.length:
        inner.varint_field(3, span.length)
    sm = Message()
    sm.message_field(2 if isinstance(span, SampledProvenanceSpan) else 1, inner)
    return sm


# ------------------------------------------------------------------------------ decoding


def decode_forward_backward_request(body: bytes) -> tuple[ForwardBackwardRequest, bool]:
    """Parse a protobuf forward_backward body (for servers): ``(request, forward_only)``.

    ``loss_fn_config`` is read from ``loss_fn_config_v2`` when that map is non-empty, else from
    the numeric ``loss_fn_config``.

    Raises:
        ValidationError: the bytes are not a ForwardBackwardRequest, or what they hold is not
            valid (bad dtype, a tensor whose bytes do not match its shape, ...).
    """
    msg = pb.ForwardBackwardRequest()
    try:
        msg.ParseFromString(bytes(body))
    except (DecodeError, TypeError, ValueError) as exc:
        raise ValidationError(
            f"not a protobuf ForwardBackwardRequest ({exc})", field="body"
        ) from exc
    config: dict[str, float | str] | None = None
    if msg.loss_fn_config_v2:
        config = {}
        for key, value in msg.loss_fn_config_v2.items():
            kind = value.WhichOneof("value")
            config[key] = value.text if kind == "text" else float(value.number)
    elif msg.loss_fn_config:
        config = {key: float(value) for key, value in msg.loss_fn_config.items()}
    data = [_read_datum(dm, i) for i, dm in enumerate(msg.data)]
    request = ForwardBackwardRequest(
        forward_backward_input=ForwardBackwardInput(
            data=data,
            loss_fn=msg.loss_fn,  # type: ignore[arg-type]
            loss_fn_config=config,
        ),
        model_id=msg.model_id,
        seq_id=msg.seq_id,
    )
    return request, msg.forward_only


def _read_datum(dm: Any, index: int) -> Datum:
    chunks: list[ModelInputChunk] = []
    for cm in dm.model_input:
        kind = cm.WhichOneof("chunk")
        if kind == "encoded_text":
            chunks.append(EncodedTextChunk.from_bytes(cm.encoded_text.tokens))
        elif kind == "image":
            image = cm.image
            chunks.append(
                ImageChunk(
                    data=image.data,
                    format=image.format,
                    expected_tokens=image.expected_tokens
                    if image.HasField("expected_tokens")
                    else None,
                )
            )
        elif kind == "dmel":
            chunks.append(DmelChunk(dmel=cm.dmel.dmel))
        else:
            raise ValidationError("chunk without content", field=f"data[{index}].model_input")
    inputs = {
        name: tensor_from_proto(tm, f"data[{index}].loss_fn_inputs.{name}", ValidationError)
        for name, tm in dm.loss_fn_inputs.items()
    }
    spans_in = [_read_span(s) for s in dm.model_input_spans] or None
    spans_loss = [_read_span(s) for s in dm.loss_fn_input_spans] or None
    if (spans_in is None) != (spans_loss is None):
        # An empty span list reads back as "absent"; keep the pair consistent.
        spans_in = spans_in or []
        spans_loss = spans_loss or []
    return Datum(
        ModelInput(chunks),
        inputs,
        model_input_spans=spans_in,
        loss_fn_input_spans=spans_loss,
    )


def _read_span(sm: Any) -> PromptProvenanceSpan | SampledProvenanceSpan:
    if sm.WhichOneof("span") == "sampled_tokens":
        s = sm.sampled_tokens
        return SampledProvenanceSpan(sequence_id=s.sequence_id, offset=s.offset, length=s.length)
    p = sm.prompt_tokens
    return PromptProvenanceSpan(sequence_id=p.sequence_id, offset=p.offset, length=p.length)


# ForwardBackwardRequest.seq_id is field 2 (varint), model_id field 1 (a string). Protobuf
# readers take the last occurrence of a scalar field wherever it appears, so a body encoded in
# the caller's thread without a seq_id gets it appended once the model's actor assigned it.
_SEQ_TAG = tag(2, 0)
_MODEL_TAG = tag(1, 2)
_compressors = threading.local()


def seal_forward_backward(
    body: bytes, seq_id: int, *, model_id: str | None = None, zstd: bool = False
) -> bytes:
    """Finish a ``ForwardBackwardRequest`` encoded without its ``seq_id``.

    Args:
        body: :func:`encode_forward_backward_request` output for a request whose ``seq_id``
            was left unset.
        seq_id: the id the model's sequence assigned.
        model_id: replaces the body's model id (a model restored under a new id).
        zstd: compress the result (``Content-Encoding: zstd``; needs ``zstandard``).
    """
    parts = [body]
    if model_id is not None:
        raw = model_id.encode()
        parts += [_MODEL_TAG, varint(len(raw)), raw]
    parts += [_SEQ_TAG, varint(seq_id)]
    data = b"".join(parts)
    if not zstd:
        return data
    compressor = getattr(_compressors, "zstd", None)
    if compressor is None:  # one per thread: zstandard compressors are not thread-safe
        import zstandard

        compressor = _compressors.zstd = zstandard.ZstdCompressor()
    compressed: bytes = compressor.compress(data)
    return compressed
