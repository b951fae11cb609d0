"""Server-side JSON codec for pre-0.25 clients: legacy request bodies and result shapes.

Requests: ``{"forward_backward_input": {"data", "loss_fn", "loss_fn_config"}, "model_id",
"seq_id"}`` (``forward_input`` for ``/api/v1/forward``); datums as ``{"model_input": {"chunks":
[...]}, "loss_fn_inputs": {name: TensorData}}`` where TensorData is ``{"data", "dtype",
"shape"?, "sparse_crow_indices"?, "sparse_col_indices"?}`` or a plain list (protocol §4.2).
Results: the legacy JSON shapes of §4.5 and §4.6.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from tinkex_actors._constants import LOSS_INPUT_DTYPES
from tinkex_actors.server.engine_api import (
    EngineDatum,
    ForwardBackwardResult,
    SampledSeq,
    SampleResult,
)
from tinkex_actors.server.http_errors import bad_request
from tinkex_actors.server.payloads import FwdBwdPayload, csr_to_dense, public_array

__all__ = [
    "decode_forward_backward_json",
    "decode_model_input",
    "encode_forward_backward_json",
    "encode_sample_json",
]

_JSON_DTYPES = {"int64": np.int64, "float32": np.float32}


def decode_model_input(value: Any, where: str) -> npt.NDArray[np.int64]:
    """Token ids of a JSON ModelInput (``{"chunks": [...]}``); text chunks only."""
    if not isinstance(value, Mapping) or not isinstance(value.get("chunks"), list):
        raise bad_request(f"{where}: expected a ModelInput object {{'chunks': [...]}}")
    tokens: list[int] = []
    for i, chunk in enumerate(value["chunks"]):
        if not isinstance(chunk, Mapping):
            raise bad_request(f"{where}.chunks[{i}]: expected an object")
        kind = chunk.get("type", "encoded_text" if "tokens" in chunk else None)
        if kind != "encoded_text":
            raise bad_request(
                f"{where}.chunks[{i}]: {kind} chunks are not supported "
                "(the served models are text-only)"
            )
        raw = chunk.get("tokens")
        if not isinstance(raw, list) or not all(
            isinstance(t, int) and not isinstance(t, bool) for t in raw
        ):
            raise bad_request(f"{where}.chunks[{i}].tokens: expected a list of integers")
        tokens.extend(raw)
    return np.asarray(tokens, dtype=np.int64)


def _tensor(name: str, value: Any, where: str) -> npt.NDArray[np.generic]:
    try:
        if isinstance(value, list):
            list_dtype = LOSS_INPUT_DTYPES.get(name)
            if list_dtype is None:
                guess = np.asarray(value)
                list_dtype = "int64" if np.issubdtype(guess.dtype, np.integer) else "float32"
            return np.asarray(value, dtype=list_dtype)
        if not isinstance(value, Mapping) or not isinstance(value.get("data"), list):
            raise bad_request(f"{where}: expected a TensorData object or a list")
        dtype = _JSON_DTYPES.get(str(value.get("dtype")))
        if dtype is None:
            raise bad_request(f"{where}.dtype: expected 'int64' or 'float32'")
        flat = np.asarray(value["data"], dtype=dtype).reshape(-1)
        shape = value.get("shape")
        if value.get("sparse_crow_indices") is not None:
            crow = np.asarray(value["sparse_crow_indices"], dtype=np.int64)
            col = np.asarray(value.get("sparse_col_indices") or [], dtype=np.int64)
            return csr_to_dense(flat, crow, col, list(shape or []), where)
        if shape is not None:
            if int(np.prod(shape)) != flat.size:
                raise bad_request(f"{where}: shape {shape} does not match {flat.size} values")
            return flat.reshape(shape)
        return flat
    except (TypeError, ValueError, OverflowError) as exc:
        raise bad_request(f"{where}: not a numeric array ({exc})") from exc


def _datum(value: Any, index: int) -> EngineDatum:
    where = f"data[{index}]"
    if not isinstance(value, Mapping):
        raise bad_request(f"{where}: expected a Datum object")
    inputs = value.get("loss_fn_inputs") or {}
    if not isinstance(inputs, Mapping):
        raise bad_request(f"{where}.loss_fn_inputs: expected an object")
    return EngineDatum(
        tokens=decode_model_input(value.get("model_input"), f"{where}.model_input"),
        inputs={
            str(k): _tensor(str(k), v, f"{where}.loss_fn_inputs.{k}") for k, v in inputs.items()
        },
    )


def decode_forward_backward_json(body: Any, *, forward_only: bool) -> FwdBwdPayload:
    """Parse a legacy JSON forward / forward_backward request."""
    key = "forward_input" if forward_only else "forward_backward_input"
    if not isinstance(body, Mapping):
        raise bad_request("expected a JSON object")
    inner = body.get(key, body.get("forward_backward_input", body.get("forward_input")))
    if not isinstance(inner, Mapping):
        raise bad_request(f"{key}: expected an object with data, loss_fn and loss_fn_config")
    model_id = body.get("model_id")
    if not isinstance(model_id, str) or not model_id:
        raise bad_request("model_id: expected a non-empty string")
    seq_id = body.get("seq_id")
    if seq_id is not None and (not isinstance(seq_id, int) or isinstance(seq_id, bool)):
        raise bad_request("seq_id: expected an integer")
    data = inner.get("data")
    if not isinstance(data, list):
        raise bad_request(f"{key}.data: expected a list of Datum objects")
    loss_fn = inner.get("loss_fn", "cross_entropy")
    if not isinstance(loss_fn, str):
        raise bad_request(f"{key}.loss_fn: expected a string")
    raw_config = inner.get("loss_fn_config") or {}
    if not isinstance(raw_config, Mapping):
        raise bad_request(f"{key}.loss_fn_config: expected an object (or null)")
    config: dict[str, float] = {}
    text: dict[str, str] = {}
    for name, value in raw_config.items():
        if isinstance(value, str):
            text[str(name)] = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            config[str(name)] = float(value)
        else:
            raise bad_request(f"{key}.loss_fn_config.{name}: expected a number or a string")
    return FwdBwdPayload(
        model_id=model_id,
        seq_id=seq_id or None,
        data=[_datum(d, i) for i, d in enumerate(data)],
        loss_fn=loss_fn,
        loss_fn_config=config,
        loss_fn_config_text=text,
        forward_only=bool(inner.get("forward_only", forward_only)),
    )


def _tensor_json(array: npt.NDArray[np.generic]) -> dict[str, Any]:
    array = public_array(np.asarray(array))
    return {
        "data": array.reshape(-1).tolist(),
        "dtype": "float32" if array.dtype.kind == "f" else "int64",
        "shape": list(array.shape),
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def encode_forward_backward_json(result: ForwardBackwardResult) -> dict[str, Any]:
    """The legacy JSON ``ForwardBackwardOutput``."""
    return {
        "loss_fn_output_type": result.loss_fn_output_type,
        "loss_fn_outputs": [
            {name: _tensor_json(value) for name, value in out.items()} for out in result.outputs
        ],
        "metrics": {k: _finite(float(v)) for k, v in result.metrics.items()},
    }


def _topk_json(rows: Any) -> list[Any]:
    return [None if row is None else [[int(t), float(lp)] for t, lp in row] for row in rows]


def _sequence_json(seq: SampledSeq) -> dict[str, Any]:
    out: dict[str, Any] = {
        "stop_reason": seq.stop_reason,
        "tokens": [int(t) for t in seq.tokens],
        "logprobs": [float(v) for v in seq.logprobs],
    }
    if seq.topk_logprobs is not None:
        out["topk_logprobs"] = _topk_json(seq.topk_logprobs)
    return out


def _target_json(result: SampleResult) -> dict[str, Any]:
    values = np.asarray(result.target_prompt_logprobs, dtype=np.float32)
    if result.target_prompt_csr is None:
        return _tensor_json(values)
    crow, col = result.target_prompt_csr
    rows = np.repeat(np.arange(values.shape[0]), np.diff(crow))
    return {
        "data": values[rows, col].tolist(),
        "dtype": "float32",
        "shape": list(values.shape),
        "sparse_crow_indices": np.asarray(crow).tolist(),
        "sparse_col_indices": np.asarray(col).tolist(),
    }


def encode_sample_json(result: SampleResult) -> dict[str, Any]:
    """The legacy JSON ``SampleResponse`` (0.38 fields in the TensorData JSON form)."""
    body: dict[str, Any] = {
        "type": "sample",
        "sequences": [_sequence_json(seq) for seq in result.sequences],
        "prompt_cache_hit_tokens": result.prompt_cache_hit_tokens,
    }
    if result.prompt_logprobs is not None:
        body["prompt_logprobs"] = [None if v is None else float(v) for v in result.prompt_logprobs]
    if result.topk_prompt_logprobs is not None:
        body["topk_prompt_logprobs"] = _topk_json(result.topk_prompt_logprobs)
    if result.target_prompt_logprobs is not None:
        body["target_prompt_logprobs"] = _target_json(result)
    if result.prompt_alt_tokens is not None:
        tokens, logprobs = result.prompt_alt_tokens
        body["prompt_alt_tokens"] = {
            "tokens": _tensor_json(np.asarray(tokens, dtype=np.int64)),
            "logprobs": _tensor_json(np.asarray(logprobs, dtype=np.float32)),
        }
    return body
