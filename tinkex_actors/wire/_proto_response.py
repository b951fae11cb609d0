"""Protobuf codec of future results: ForwardBackwardOutput (§4.5) and SampleResponse (§4.6).

Decoding follows the official SDK exactly (batched per-datum tensors split at int64 byte
offsets, int32 widened to int64, bfloat16 to float32, several records concatenated, the
output type taken after the last ``:``; NaN prompt logprobs read as None, top-k sentinel
cells trimmed) and turns every malformed message into ``ResponseDecodeError``. The encoders
are the inverse, for servers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from google.protobuf.message import DecodeError

from tinkex_actors._constants import TOPK_SENTINEL_LOGPROB, TOPK_SENTINEL_TOKEN
from tinkex_actors.errors import ResponseDecodeError, ValidationError
from tinkex_actors.types import _packed
from tinkex_actors.types._sampling import (
    PromptAltTokens,
    SampledSequence,
    SampleResponse,
    StopReason,
    TopkLogprobs,
)
from tinkex_actors.types._tensor import TensorData
from tinkex_actors.types._training import ForwardBackwardOutput
from tinkex_actors.wire import tinker_public_pb2 as pb
from tinkex_actors.wire._tensors import PROTO_DTYPE, read_buffer, tensor_from_proto, write_tensor

__all__ = [
    "decode_forward_backward_output",
    "decode_sample_response",
    "encode_forward_backward_output",
    "encode_sample_response",
]

_FBO = "ForwardBackwardOutput (protobuf)"
_SAMPLE = "SampleResponse (protobuf)"
_STOP_REASONS: dict[int, StopReason] = {
    pb.STOP_REASON_STOP: "stop",
    pb.STOP_REASON_LENGTH: "length",
}
_STOP_ENUM: dict[str, int] = {name: value for value, name in _STOP_REASONS.items()}
_HEX_BYTES = 48


class _MalformedError(Exception):
    """Internal: a decoding problem, turned into ResponseDecodeError with the body excerpt."""


def _body_excerpt(body: bytes) -> str:
    head = body[:_HEX_BYTES].hex(" ")
    more = " ..." if len(body) > _HEX_BYTES else ""
    return f"<{len(body)} bytes: {head}{more}>"


def _parse(message: Any, body: bytes, expected: str) -> None:
    try:
        message.ParseFromString(bytes(body))
    except (DecodeError, TypeError, ValueError) as exc:
        raise ResponseDecodeError(
            f"not a protobuf message ({exc})", body=_body_excerpt(bytes(body)), expected=expected
        ) from exc


# ============================================================================ ForwardBackwardOutput


def decode_forward_backward_output(body: bytes) -> ForwardBackwardOutput:
    """Decode a protobuf ForwardBackwardOutput (the result of forward / forward_backward).

    Raises:
        ResponseDecodeError: not a ForwardBackwardOutput, or inconsistent offsets, dtypes or
            datum counts.
    """
    msg = pb.ForwardBackwardOutput()
    _parse(msg, body, _FBO)
    try:
        return _fbo_from_proto(msg)
    except (_MalformedError, ValidationError) as exc:
        raise ResponseDecodeError(str(exc), body=_body_excerpt(bytes(body)), expected=_FBO) from exc


def _fbo_from_proto(msg: Any) -> ForwardBackwardOutput:
    metrics = {key: float(value) for key, value in msg.metrics.items()}
    if not msg.loss_fn_outputs:
        return ForwardBackwardOutput(
            loss_fn_output_type=msg.loss_fn_output_type or "ArrayRecord",
            loss_fn_outputs=[],
            metrics=metrics,
        )
    per_field: dict[str, list[TensorData]] = {}
    for r, record in enumerate(msg.loss_fn_outputs):
        for name, bt in record.fields.items():
            per_field.setdefault(name, []).extend(
                _split_batched(bt, f"loss_fn_outputs[{r}].{name}")
            )
    num_datums = sum(record.num_datums for record in msg.loss_fn_outputs)
    if num_datums == 0 and per_field:
        # Writers that predate num_datums: every field has one entry per datum.
        num_datums = len(next(iter(per_field.values())))
    for name, tensors in per_field.items():
        if len(tensors) < num_datums:
            raise _MalformedError(
                f"field {name!r} has {len(tensors)} datums but the records announce {num_datums}"
            )
    outputs = [{name: tensors[i] for name, tensors in per_field.items()} for i in range(num_datums)]
    return ForwardBackwardOutput(
        loss_fn_output_type=msg.loss_fn_output_type.rsplit(":", 1)[-1],
        loss_fn_outputs=outputs,
        metrics=metrics,
    )


def _split_batched(bt: Any, where: str) -> list[TensorData]:
    """One TensorData per datum of a BatchedTensor (offsets are int64 byte offsets)."""
    wire_size = {pb.DTYPE_FLOAT32: 4, pb.DTYPE_INT64: 8, pb.DTYPE_INT32: 4, pb.DTYPE_BFLOAT16: 2}
    src = wire_size.get(bt.dtype)
    if src is None:
        raise _MalformedError(f"{where}: unsupported dtype enum value {bt.dtype}")
    data, dtype = read_buffer(bt.data, bt.dtype, where, _MalformedError)
    if len(bt.offsets) % 8:
        raise _MalformedError(f"{where}: offsets are not whole int64 values")
    offsets = _packed.unpack(bt.offsets, "q")
    trailing = tuple(bt.trailing_shape)
    if any(d < 0 for d in trailing):
        raise _MalformedError(f"{where}: negative trailing_shape {list(trailing)}")
    per_row = math.prod(trailing)
    size = _packed.ITEMSIZE[_packed.CODE[dtype]]
    out: list[TensorData] = []
    for i in range(len(offsets) - 1):
        start, end = offsets[i], offsets[i + 1]
        if start % src or end % src or not 0 <= start <= end <= len(bt.data):
            raise _MalformedError(
                f"{where}: bad byte offsets {start}..{end} for {len(bt.data)} bytes"
            )
        first, last = start // src, end // src
        n = last - first
        if per_row and n % per_row:
            raise _MalformedError(
                f"{where}: datum {i} has {n} elements, not a multiple of {per_row}"
            )
        leading = n // per_row if per_row else 0
        out.append(
            TensorData._trusted(data[first * size : last * size], dtype, (leading, *trailing))
        )
    return out


def encode_forward_backward_output(output: ForwardBackwardOutput) -> bytes:
    """Serialize a ForwardBackwardOutput to protobuf (for servers).

    Datums are batched per field; consecutive datums whose fields share dtype and trailing
    shape go into one ArrayRecord, so ragged outputs become several records. A datum without
    some field gets an empty entry for it. Sparse tensors are sent dense.
    """
    msg = pb.ForwardBackwardOutput()
    msg.loss_fn_output_type = output.loss_fn_output_type
    for key, value in output.metrics.items():
        msg.metrics[key] = float(value)
    names: list[str] = []
    for datum in output.loss_fn_outputs:
        names.extend(n for n in datum if n not in names)
    groups: list[tuple[tuple[Any, ...], list[dict[str, TensorData]]]] = []
    for datum in output.loss_fn_outputs:
        signature = tuple(_field_signature(datum.get(n)) for n in names)
        if groups and _compatible(groups[-1][0], signature):
            groups[-1] = (_merge(groups[-1][0], signature), [*groups[-1][1], datum])
        else:
            groups.append((signature, [datum]))
    if not groups:
        # One empty record: readers then keep loss_fn_output_type as sent (with no records
        # at all, the official reader substitutes "ArrayRecord" for an empty type).
        msg.loss_fn_outputs.add().type_tag = output.loss_fn_output_type
    for signature, datums in groups:
        record = msg.loss_fn_outputs.add()
        record.type_tag = output.loss_fn_output_type
        record.num_datums = len(datums)
        for n, (dtype, trailing) in zip(names, signature, strict=True):
            if dtype is None:
                continue
            _write_batched(record.fields[n], [d.get(n) for d in datums], dtype, trailing)
    return msg.SerializeToString()


def _field_signature(td: TensorData | None) -> tuple[str | None, tuple[int, ...]]:
    if td is None:
        return (None, ())
    return (td.dtype, td.dense_shape[1:])


def _compatible(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return all(x[0] is None or y[0] is None or x == y for x, y in zip(a, b, strict=True))


def _merge(a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(x if x[0] is not None else y for x, y in zip(a, b, strict=True))


def _write_batched(
    bt: Any, tensors: Sequence[TensorData | None], dtype: str, trailing: tuple[int, ...]
) -> None:
    parts: list[bytes] = []
    offsets = [0]
    for td in tensors:
        buf = b"" if td is None else _dense_bytes(td)
        parts.append(buf)
        offsets.append(offsets[-1] + len(buf))
    bt.data = b"".join(parts)
    bt.offsets = TensorData(offsets, "int64").to_bytes()
    bt.dtype = PROTO_DTYPE[dtype]
    bt.trailing_shape.extend(trailing)


def _dense_bytes(td: TensorData) -> bytes:
    if not td.is_sparse:
        return td.to_bytes()
    return TensorData(td.to_list(), td.dtype, td.dense_shape).to_bytes()


# ============================================================================ SampleResponse


def decode_sample_response(body: bytes) -> SampleResponse:
    """Decode a protobuf SampleResponse (the result of asample).

    ``sequence_id`` is not on this wire: stamp it with
    :meth:`SampleResponse.with_sequence_ids` from the future's ``sample_sequence_ids``.

    Raises:
        ResponseDecodeError: not a SampleResponse, an unknown stop reason, or arrays whose
            byte lengths do not match.
    """
    msg = pb.SampleResponse()
    _parse(msg, body, _SAMPLE)
    try:
        return _sample_from_proto(msg)
    except (_MalformedError, ValidationError) as exc:
        raise ResponseDecodeError(
            str(exc), body=_body_excerpt(bytes(body)), expected=_SAMPLE
        ) from exc


def _sample_from_proto(msg: Any) -> SampleResponse:
    sequences = []
    for i, seq in enumerate(msg.sequences):
        reason = _STOP_REASONS.get(seq.stop_reason)
        if reason is None:
            raise _MalformedError(
                f"sequences[{i}]: unknown stop_reason enum value {seq.stop_reason}"
            )
        sequences.append(
            SampledSequence(
                stop_reason=reason,
                tokens=_unpack(seq.tokens, "i", f"sequences[{i}].tokens"),
                logprobs=_unpack(seq.logprobs, "f", f"sequences[{i}].logprobs")
                if seq.logprobs
                else None,
                topk_logprobs=_topk(
                    seq.topk_sampled_logprobs, f"sequences[{i}].topk_sampled_logprobs"
                )
                if seq.HasField("topk_sampled_logprobs")
                else None,
            )
        )
    prompt_logprobs: list[float | None] | None = None
    if msg.prompt_logprobs:
        prompt_logprobs = [
            None if x != x else x for x in _unpack(msg.prompt_logprobs, "f", "prompt_logprobs")
        ]
    return SampleResponse(
        sequences=sequences,
        prompt_logprobs=prompt_logprobs,
        topk_prompt_logprobs=_topk(msg.topk_prompt_logprobs, "topk_prompt_logprobs")
        if msg.HasField("topk_prompt_logprobs")
        else None,
        prompt_cache_hit_tokens=msg.prompt_cache_hit_tokens,
        target_prompt_logprobs=tensor_from_proto(
            msg.target_prompt_logprobs, "target_prompt_logprobs", _MalformedError
        )
        if msg.HasField("target_prompt_logprobs")
        else None,
        prompt_alt_tokens=PromptAltTokens(
            tokens=tensor_from_proto(
                msg.prompt_alt_tokens.tokens, "prompt_alt_tokens.tokens", _MalformedError
            ),
            logprobs=tensor_from_proto(
                msg.prompt_alt_tokens.logprobs, "prompt_alt_tokens.logprobs", _MalformedError
            ),
        )
        if msg.HasField("prompt_alt_tokens")
        else None,
    )


def _unpack(data: bytes, code: str, where: str) -> list[Any]:
    if len(data) % 4:
        raise _MalformedError(f"{where}: {len(data)} bytes is not a whole number of 4-byte values")
    return _packed.unpack(data, code)


def _topk(topk: Any, where: str) -> TopkLogprobs | None:
    n, k = topk.length, topk.k
    if n == 0 or k == 0:
        return None
    if len(topk.token_ids) != 4 * n * k or len(topk.logprobs) != 4 * n * k:
        raise _MalformedError(f"{where}: expected {n}x{k} token ids and logprobs")
    ids = _packed.unpack(topk.token_ids, "i")
    lps = _packed.unpack(topk.logprobs, "f")
    rows: TopkLogprobs = []
    for i in range(n):
        start = i * k
        if ids[start] == TOPK_SENTINEL_TOKEN and lps[start] == TOPK_SENTINEL_LOGPROB:
            rows.append(None)
            continue
        end = start + k
        while (
            end > start
            and ids[end - 1] == TOPK_SENTINEL_TOKEN
            and lps[end - 1] == TOPK_SENTINEL_LOGPROB
        ):
            end -= 1
        rows.append(list(zip(ids[start:end], lps[start:end], strict=True)))
    return rows


def encode_sample_response(response: SampleResponse) -> bytes:
    """Serialize a SampleResponse to protobuf (for servers).

    None prompt logprobs become NaN; top-k rows are padded to the widest row with the
    sentinel ``(0, -99999.0)`` (a None row is all sentinel). ``sequence_id`` is not sent: the
    ids travel in the asample future's ``sample_sequence_ids``.
    """
    msg = pb.SampleResponse()
    for seq in response.sequences:
        sm = msg.sequences.add()
        sm.stop_reason = _STOP_ENUM[seq.stop_reason]  # type: ignore[assignment]
        sm.tokens = _pack(seq.tokens, "i", "SampledSequence.tokens")
        if seq.logprobs is not None:
            sm.logprobs = _pack(seq.logprobs, "f", "SampledSequence.logprobs")
        if seq.topk_logprobs is not None:
            _write_topk(sm.topk_sampled_logprobs, seq.topk_logprobs)
    if response.prompt_logprobs is not None:
        values = [math.nan if x is None else x for x in response.prompt_logprobs]
        msg.prompt_logprobs = _pack(values, "f", "SampleResponse.prompt_logprobs")
    if response.topk_prompt_logprobs is not None:
        _write_topk(msg.topk_prompt_logprobs, response.topk_prompt_logprobs)
    msg.prompt_cache_hit_tokens = response.prompt_cache_hit_tokens
    if response.target_prompt_logprobs is not None:
        write_tensor(msg.target_prompt_logprobs, response.target_prompt_logprobs)
    if response.prompt_alt_tokens is not None:
        write_tensor(msg.prompt_alt_tokens.tokens, response.prompt_alt_tokens.tokens)
        write_tensor(msg.prompt_alt_tokens.logprobs, response.prompt_alt_tokens.logprobs)
    return msg.SerializeToString()


def _pack(values: Sequence[Any], code: str, field: str) -> bytes:
    return _packed.pack_sequence(values, code, field)[0]


def _write_topk(tm: Any, rows: TopkLogprobs) -> None:
    k = max((len(row) for row in rows if row), default=0)
    k = max(k, 1)
    ids: list[int] = []
    lps: list[float] = []
    for row in rows:
        cells = row or []
        ids.extend(token for token, _ in cells)
        lps.extend(lp for _, lp in cells)
        pad = k - len(cells)
        ids.extend([TOPK_SENTINEL_TOKEN] * pad)
        lps.extend([TOPK_SENTINEL_LOGPROB] * pad)
    tm.token_ids = _pack(ids, "i", "topk.token_ids")
    tm.logprobs = _pack(lps, "f", "topk.logprobs")
    tm.k = k
    tm.length = len(rows)
