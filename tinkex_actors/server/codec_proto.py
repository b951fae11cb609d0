"""Server-side protobuf codec: decode ForwardBackwardRequest, encode the two binary results.

The SDK side encodes requests and decodes results (``tinkex_actors.wire``); the server needs
the opposite directions. Arrays travel as raw little-endian bytes (protocol §4.4).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from google.protobuf.message import DecodeError

from tinkex_actors._constants import TOPK_SENTINEL_LOGPROB, TOPK_SENTINEL_TOKEN
from tinkex_actors.server.engine_api import EngineDatum, ForwardBackwardResult, SampleResult
from tinkex_actors.server.http_errors import bad_request
from tinkex_actors.server.payloads import FwdBwdPayload, csr_to_dense, public_array
from tinkex_actors.wire import tinker_public_pb2 as pb

__all__ = ["decode_forward_backward", "encode_forward_backward", "encode_sample"]

_READ_DTYPES: dict[int, str] = {
    pb.DTYPE_FLOAT32: "<f4",
    pb.DTYPE_INT64: "<i8",
    pb.DTYPE_INT32: "<i4",
    pb.DTYPE_BFLOAT16: "<u2",
}


def _frombuffer(raw: bytes, dtype: str, where: str) -> npt.NDArray[np.generic]:
    itemsize = np.dtype(dtype).itemsize
    if len(raw) % itemsize:
        raise bad_request(f"{where}: {len(raw)} bytes is not a whole number of {dtype} values")
    return np.frombuffer(raw, dtype=dtype)


def _widen(array: npt.NDArray[np.generic], proto_dtype: int) -> npt.NDArray[np.generic]:
    if proto_dtype == pb.DTYPE_BFLOAT16:
        return (array.astype(np.uint32) << 16).view(np.float32)
    if proto_dtype == pb.DTYPE_INT32:
        return array.astype(np.int64)
    return array


def _tensor(tensor: pb.Tensor, where: str) -> npt.NDArray[np.generic]:
    dtype = _READ_DTYPES.get(tensor.dtype)
    if dtype is None:
        raise bad_request(f"{where}: unsupported dtype {tensor.dtype}")
    shape = [int(d) for d in tensor.shape]
    if tensor.WhichOneof("encoding") == "sparse_csr":
        csr = tensor.sparse_csr
        values = _widen(_frombuffer(csr.values, dtype, where), tensor.dtype)
        crow = _frombuffer(csr.crow_indices, "<i8", where).astype(np.int64)
        col = _frombuffer(csr.col_indices, "<i8", where).astype(np.int64)
        return csr_to_dense(values, crow, col, shape, where)
    flat = _widen(_frombuffer(tensor.dense, dtype, where), tensor.dtype)
    if shape:
        if any(d < 0 for d in shape) or int(np.prod(shape)) != flat.size:
            raise bad_request(f"{where}: shape {shape} does not match {flat.size} values")
        return flat.reshape(shape)
    return flat


def _datum(datum: pb.Datum, index: int) -> EngineDatum:
    pieces: list[npt.NDArray[np.generic]] = []
    for chunk in datum.model_input:
        kind = chunk.WhichOneof("chunk")
        if kind != "encoded_text":
            raise bad_request(
                f"data[{index}].model_input: {kind or 'empty'} chunks are not supported "
                "(the served models are text-only)"
            )
        where = f"data[{index}].model_input"
        pieces.append(_frombuffer(chunk.encoded_text.tokens, "<i4", where))
    tokens = np.concatenate(pieces).astype(np.int64) if pieces else np.zeros(0, np.int64)
    inputs = {
        name: _tensor(tensor, f"data[{index}].loss_fn_inputs.{name}")
        for name, tensor in datum.loss_fn_inputs.items()
    }
    return EngineDatum(tokens=tokens, inputs=inputs)


def decode_forward_backward(body: bytes) -> FwdBwdPayload:
    """Parse a protobuf ``ForwardBackwardRequest``; 400 when it is not one."""
    message = pb.ForwardBackwardRequest()
    try:
        message.ParseFromString(body)
    except DecodeError as exc:
        raise bad_request(f"malformed protobuf ForwardBackwardRequest: {exc}") from exc
    config: dict[str, float] = {}
    text: dict[str, str] = {}
    if message.loss_fn_config_v2:
        for key, value in message.loss_fn_config_v2.items():
            if value.WhichOneof("value") == "text":
                text[key] = value.text
            else:
                config[key] = float(value.number)
    else:
        config = {key: float(value) for key, value in message.loss_fn_config.items()}
    return FwdBwdPayload(
        model_id=message.model_id,
        # proto3 has no null: an absent seq_id arrives as 0, and real ones start at 1.
        seq_id=message.seq_id or None,
        data=[_datum(d, i) for i, d in enumerate(message.data)],
        loss_fn=message.loss_fn,
        loss_fn_config=config,
        loss_fn_config_text=text,
        forward_only=message.forward_only,
    )


_WRITE_DTYPES = {np.dtype("<f4"): pb.DTYPE_FLOAT32, np.dtype("<i8"): pb.DTYPE_INT64}


def encode_forward_backward(result: ForwardBackwardResult) -> bytes:
    """``ForwardBackwardOutput`` bytes: one ArrayRecord holding every datum's outputs."""
    message = pb.ForwardBackwardOutput(loss_fn_output_type=result.loss_fn_output_type)
    for key, value in result.metrics.items():
        message.metrics[key] = float(value)
    if result.outputs:
        record = message.loss_fn_outputs.add()
        record.type_tag = result.loss_fn_output_type
        record.num_datums = len(result.outputs)
        for name in result.outputs[0]:
            arrays = [public_array(np.asarray(out[name])) for out in result.outputs]
            trailing = arrays[0].shape[1:]
            offsets = np.zeros(len(arrays) + 1, dtype="<i8")
            np.cumsum([a.nbytes for a in arrays], out=offsets[1:])
            field = record.fields[name]
            field.data = b"".join(a.tobytes() for a in arrays)
            field.offsets = offsets.tobytes()
            field.dtype = _WRITE_DTYPES[arrays[0].dtype]
            field.trailing_shape.extend(int(d) for d in trailing)
    return message.SerializeToString()


def _topk(rows: list[list[tuple[int, float]] | None]) -> pb.TopkLogprobs:
    k = max((len(row) for row in rows if row), default=0) or 1
    ids = np.full((len(rows), k), TOPK_SENTINEL_TOKEN, dtype="<i4")
    logprobs = np.full((len(rows), k), TOPK_SENTINEL_LOGPROB, dtype="<f4")
    for i, row in enumerate(rows):
        for j, (token, logprob) in enumerate(row or ()):
            ids[i, j] = token
            logprobs[i, j] = logprob
    return pb.TopkLogprobs(
        token_ids=ids.tobytes(), logprobs=logprobs.tobytes(), k=k, length=len(rows)
    )


def _dense_tensor(array: npt.NDArray[np.generic]) -> pb.Tensor:
    array = public_array(array)
    return pb.Tensor(
        dense=array.tobytes(), dtype=_WRITE_DTYPES[array.dtype], shape=list(array.shape)
    )


def _target_tensor(result: SampleResult) -> pb.Tensor:
    """The target logprobs in the request's layout: dense, or CSR with its indices."""
    values = np.asarray(result.target_prompt_logprobs, dtype="<f4")
    if result.target_prompt_csr is None:
        return _dense_tensor(values)
    crow, col = result.target_prompt_csr
    rows = np.repeat(np.arange(values.shape[0]), np.diff(crow))
    return pb.Tensor(
        sparse_csr=pb.SparseCsr(
            values=np.ascontiguousarray(values[rows, col], dtype="<f4").tobytes(),
            crow_indices=np.asarray(crow, dtype="<i8").tobytes(),
            col_indices=np.asarray(col, dtype="<i8").tobytes(),
        ),
        dtype=pb.DTYPE_FLOAT32,
        shape=list(values.shape),
    )


def encode_sample(result: SampleResult) -> bytes:
    """``SampleResponse`` bytes (prompt logprobs NaN where undefined, top-k sentinel-padded;
    0.38 fields: per-sequence top-k (field 4), target logprobs (5), prompt alternatives (6))."""
    message = pb.SampleResponse(prompt_cache_hit_tokens=result.prompt_cache_hit_tokens)
    for seq in result.sequences:
        sequence = message.sequences.add(
            stop_reason=pb.STOP_REASON_STOP if seq.stop_reason == "stop" else pb.STOP_REASON_LENGTH,
            tokens=np.asarray(seq.tokens, dtype="<i4").tobytes(),
            logprobs=np.asarray(seq.logprobs, dtype="<f4").tobytes(),
        )
        if seq.topk_logprobs is not None:
            sequence.topk_sampled_logprobs.CopyFrom(_topk(list(seq.topk_logprobs)))
    if result.prompt_logprobs is not None:
        values = [np.nan if v is None else v for v in result.prompt_logprobs]
        message.prompt_logprobs = np.asarray(values, dtype="<f4").tobytes()
    if result.topk_prompt_logprobs is not None:
        message.topk_prompt_logprobs.CopyFrom(_topk(result.topk_prompt_logprobs))
    if result.target_prompt_logprobs is not None:
        message.target_prompt_logprobs.CopyFrom(_target_tensor(result))
    if result.prompt_alt_tokens is not None:
        tokens, logprobs = result.prompt_alt_tokens
        message.prompt_alt_tokens.tokens.CopyFrom(_dense_tensor(np.asarray(tokens, "<i8")))
        message.prompt_alt_tokens.logprobs.CopyFrom(_dense_tensor(np.asarray(logprobs, "<f4")))
    return message.SerializeToString()
