"""Protobuf wire parity with the official ``tinker`` SDK (0.38.0), both directions.

* forward_backward requests: our bytes, parsed by the official generated module, equal the
  message the official ``request_conv`` builds for the same datums; official bytes decode
  (server side) into the same objects we built.
* ForwardBackwardOutput / SampleResponse: messages built with the official generated module
  decode through ours to what the official ``response_conv`` returns; what we encode decodes
  through ``response_conv`` to what we started from.
* Garbage never escapes as anything but ResponseDecodeError (results) / ValidationError
  (requests).
"""

from __future__ import annotations

import contextlib
import math
import struct
from typing import Any

import numpy as np
import pytest
import tinker.types as T  # noqa: N812 - short oracle prefix
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tinker.proto import request_conv, response_conv
from tinker.proto import tinker_public_pb2 as opb

from tinkex_actors import types as t
from tinkex_actors import wire
from tinkex_actors.errors import ResponseDecodeError, ValidationError

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOKEN = st.integers(min_value=0, max_value=2**31 - 1)
F32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
DMEL = bytes([1, 2, 3, 2]) + b"\x07" * 24  # TensorContainer header: float dtype, shape (3, 2)


# ============================================================================ requests


@st.composite
def datum_specs(draw: Any) -> dict[str, Any]:
    chunks = draw(
        st.lists(
            st.one_of(
                st.tuples(st.just("text"), st.lists(TOKEN, max_size=12)),
                st.tuples(
                    st.just("image"),
                    st.binary(max_size=16),
                    st.sampled_from(["png", "jpeg"]),
                    st.none() | st.integers(0, 500),
                ),
                st.tuples(st.just("dmel")),
            ),
            min_size=1,
            max_size=3,
        )
    )
    n = draw(st.integers(0, 8))
    inputs: dict[str, Any] = {
        "target_tokens": ("list", draw(st.lists(TOKEN, min_size=n, max_size=n))),
        "weights": ("list", draw(st.lists(F32, min_size=n, max_size=n))),
    }
    if draw(st.booleans()):
        inputs["advantages"] = ("numpy", draw(st.lists(F32, min_size=n, max_size=n)))
    if draw(st.booleans()):
        rows = draw(st.integers(1, 3))
        cells = [(r, c) for r in range(rows) for c in range(3) if draw(st.booleans())]
        inputs["mask"] = (
            "sparse",
            rows,
            cells,
            draw(st.lists(INT64, min_size=len(cells), max_size=len(cells))),
        )
    spans = draw(st.booleans())
    return {"chunks": chunks, "inputs": inputs, "spans": spans}


def build_ours(spec: dict[str, Any]) -> t.Datum:
    chunks: list[t.ModelInputChunk] = []
    for chunk in spec["chunks"]:
        if chunk[0] == "text":
            chunks.append(t.EncodedTextChunk(chunk[1]))
        elif chunk[0] == "image":
            chunks.append(t.ImageChunk(data=chunk[1], format=chunk[2], expected_tokens=chunk[3]))
        else:
            chunks.append(t.DmelChunk(dmel=DMEL))
    inputs: dict[str, Any] = {}
    for key, value in spec["inputs"].items():
        if value[0] == "list":
            inputs[key] = value[1]
        elif value[0] == "numpy":
            inputs[key] = np.asarray(value[1], dtype=np.float32)
        else:
            _, rows, cells, values = value
            crow = [sum(1 for r, _ in cells if r < i) for i in range(rows + 1)]
            inputs[key] = t.TensorData(values, "int64", [rows, 3], crow, [c for _, c in cells])
    spans: dict[str, Any] = {}
    if spec["spans"]:
        spans = {
            "model_input_spans": [t.PromptProvenanceSpan(sequence_id="p", offset=1, length=2)],
            "loss_fn_input_spans": [t.SampledProvenanceSpan(sequence_id="s", length=3)],
        }
    return t.Datum(t.ModelInput(chunks), inputs, **spans)


def build_official(spec: dict[str, Any]) -> Any:
    chunks: list[Any] = []
    for chunk in spec["chunks"]:
        if chunk[0] == "text":
            chunks.append(T.EncodedTextChunk(tokens=chunk[1]))
        elif chunk[0] == "image":
            chunks.append(T.ImageChunk(data=chunk[1], format=chunk[2], expected_tokens=chunk[3]))
        else:
            chunks.append(T.DmelChunk(dmel=DMEL))
    inputs: dict[str, Any] = {}
    for key, value in spec["inputs"].items():
        if value[0] == "list":
            inputs[key] = value[1]
        elif value[0] == "numpy":
            inputs[key] = np.asarray(value[1], dtype=np.float32)
        else:
            _, rows, cells, values = value
            crow = [sum(1 for r, _ in cells if r < i) for i in range(rows + 1)]
            inputs[key] = T.TensorData(
                data=values,
                dtype="int64",
                shape=[rows, 3],
                sparse_crow_indices=crow,
                sparse_col_indices=[c for _, c in cells],
            )
    spans: dict[str, Any] = {}
    if spec["spans"]:
        spans = {
            "model_input_spans": [T.PromptProvenanceSpan(sequence_id="p", offset=1, length=2)],
            "loss_fn_input_spans": [T.SampledProvenanceSpan(sequence_id="s", length=3)],
        }
    return T.Datum(model_input=T.ModelInput(chunks=chunks), loss_fn_inputs=inputs, **spans)


CONFIGS = st.none() | st.dictionaries(
    st.sampled_from(["clip_low_threshold", "clip_high_threshold", "beta", "loss_id"]),
    st.floats(-10, 10, allow_nan=False) | st.text(max_size=5),
    max_size=3,
)


@SETTINGS
@given(
    st.lists(datum_specs(), max_size=4),
    st.sampled_from(["cross_entropy", "importance_sampling", "ppo", "cispo", "dro", "gspo"]),
    CONFIGS,
    st.integers(0, 2**31 - 1),
    st.booleans(),
)
def test_request_matches_official_request_conv(
    specs: list[dict[str, Any]], loss_fn: Any, config: Any, seq_id: int, forward_only: bool
) -> None:
    ours = t.ForwardBackwardRequest(
        forward_backward_input=t.ForwardBackwardInput(
            data=[build_ours(s) for s in specs], loss_fn=loss_fn, loss_fn_config=config
        ),
        model_id="s:train:0",
        seq_id=seq_id,
    )
    body = wire.encode_forward_backward_request(ours, forward_only=forward_only)
    parsed = opb.ForwardBackwardRequest()
    parsed.ParseFromString(body)
    theirs = request_conv.forward_backward_request_to_proto(
        T.ForwardBackwardRequest(
            forward_backward_input=T.ForwardBackwardInput(
                data=[build_official(s) for s in specs], loss_fn=loss_fn, loss_fn_config=config
            ),
            model_id="s:train:0",
            seq_id=seq_id,
        )
    )
    theirs.forward_only = forward_only
    assert parsed == theirs

    # ... and the official bytes decode (server side) into what we built.
    decoded, only = wire.decode_forward_backward_request(theirs.SerializeToString())
    assert only is forward_only
    assert decoded.model_id == ours.model_id
    assert decoded.seq_id == ours.seq_id
    assert decoded.forward_backward_input.data == ours.forward_backward_input.data
    expected_config = {
        k: float(v) if not isinstance(v, str) else v for k, v in (config or {}).items()
    }
    assert (decoded.forward_backward_input.loss_fn_config or {}) == expected_config


def test_forward_request_is_sent_forward_only() -> None:
    request = t.ForwardRequest(
        forward_input=t.ForwardBackwardInput(data=[], loss_fn="cross_entropy"),
        model_id="m",
        seq_id=3,
    )
    parsed = opb.ForwardBackwardRequest()
    parsed.ParseFromString(wire.encode_forward_backward_request(request))
    assert (parsed.forward_only, parsed.seq_id, parsed.model_id, parsed.loss_fn) == (
        True,
        3,
        "m",
        "cross_entropy",
    )


def test_old_servers_read_the_numeric_config_map() -> None:
    request = t.ForwardBackwardRequest(
        forward_backward_input=t.ForwardBackwardInput(
            data=[], loss_fn="ppo", loss_fn_config={"clip_low_threshold": 0.8, "loss_id": "x"}
        ),
        model_id="m",
    )
    parsed = opb.ForwardBackwardRequest()
    parsed.ParseFromString(wire.encode_forward_backward_request(request))
    assert dict(parsed.loss_fn_config) == {"clip_low_threshold": 0.8}
    assert parsed.loss_fn_config_v2["loss_id"].text == "x"
    assert parsed.loss_fn_config_v2["clip_low_threshold"].number == 0.8
    assert parsed.seq_id == 0  # a missing seq_id is sent as 0, like the official SDK


def test_request_encoding_rejects_what_protobuf_cannot_carry() -> None:
    pointer = t.Datum(t.ModelInput([t.ImageAssetPointerChunk(format="png", location="x")]), {})
    request = t.ForwardBackwardRequest(
        forward_backward_input=t.ForwardBackwardInput(data=[pointer], loss_fn="cross_entropy"),
        model_id="m",
    )
    with pytest.raises(ValidationError) as info:
        wire.encode_forward_backward_request(request)
    assert info.value.field == "data[0].model_input"
    big = t.ForwardBackwardRequest(
        forward_backward_input=t.ForwardBackwardInput(data=[], loss_fn="cross_entropy"),
        model_id="m",
        seq_id=2**31,
    )
    with pytest.raises(ValidationError):
        wire.encode_forward_backward_request(big)


def test_request_built_from_numpy_encodes_like_lists() -> None:
    tokens = np.arange(100, 164)
    a = t.Datum(
        t.ModelInput.from_ints(tokens), {"target_tokens": tokens + 1, "weights": np.ones(64)}
    )
    b = t.Datum(
        t.ModelInput.from_ints(tokens.tolist()),
        {"target_tokens": (tokens + 1).tolist(), "weights": [1.0] * 64},
    )
    for datum in (a, b):
        request = t.ForwardBackwardRequest(
            forward_backward_input=t.ForwardBackwardInput(data=[datum], loss_fn="cross_entropy"),
            model_id="m",
            seq_id=1,
        )
        parsed = opb.ForwardBackwardRequest()
        parsed.ParseFromString(wire.encode_forward_backward_request(request))
        assert np.frombuffer(
            parsed.data[0].loss_fn_inputs["target_tokens"].dense, "<i8"
        ).tolist() == list(range(101, 165))
        assert parsed.data[0].loss_fn_inputs["weights"].dtype == opb.DTYPE_FLOAT32


# ============================================================================ ForwardBackwardOutput

PROTO_DTYPES = {
    opb.DTYPE_FLOAT32: ("<f4", st.floats(width=32, allow_nan=False)),
    opb.DTYPE_INT64: ("<i8", INT64),
    opb.DTYPE_INT32: ("<i4", st.integers(-(2**31), 2**31 - 1)),
    opb.DTYPE_BFLOAT16: ("<u2", st.integers(0, 0x7F7F)),
}


@st.composite
def fbo_messages(draw: Any) -> bytes:
    msg = opb.ForwardBackwardOutput()
    msg.loss_fn_output_type = draw(
        st.sampled_from(["", "ArrayRecord", "tinker.losses:ArrayRecord"])
    )
    for key in draw(st.lists(st.sampled_from(["loss:sum", "n:mean", "tok:max"]), unique=True)):
        msg.metrics[key] = draw(st.floats(-1e6, 1e6))
    fields = draw(
        st.lists(st.sampled_from(["logprobs", "elementwise_loss", "ids"]), unique=True, max_size=3)
    )
    for _ in range(draw(st.integers(0 if not fields else 1, 3))):
        record = msg.loss_fn_outputs.add()
        n = draw(st.integers(0, 4))
        record.num_datums = n if draw(st.booleans()) or not fields else 0
        for name in fields:
            dtype = draw(st.sampled_from(sorted(PROTO_DTYPES)))
            np_dtype, values = PROTO_DTYPES[dtype]
            trailing = draw(st.lists(st.integers(1, 3), max_size=2))
            per_row = math.prod(trailing)
            chunks = [
                draw(st.lists(values, min_size=per_row * k, max_size=per_row * k))
                for k in draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
            ]
            data = b"".join(np.asarray(c, dtype=np_dtype).tobytes() for c in chunks)
            offsets = np.cumsum(
                [0] + [len(c) * np.dtype(np_dtype).itemsize for c in chunks]
            ).astype("<i8")
            bt = record.fields[name]
            bt.data, bt.offsets, bt.dtype = data, offsets.tobytes(), dtype
            bt.trailing_shape.extend(trailing)
    return msg.SerializeToString()


def assert_same_fbo(ours: t.ForwardBackwardOutput, theirs: Any, *, bare_type: bool = False) -> None:
    # The reader keeps only the text after the last ':' of the type (when records exist).
    expected = (
        ours.loss_fn_output_type.rsplit(":", 1)[-1] if bare_type else ours.loss_fn_output_type
    )
    assert expected == theirs.loss_fn_output_type
    assert ours.metrics == theirs.metrics
    assert len(ours.loss_fn_outputs) == len(theirs.loss_fn_outputs)
    for mine, other in zip(ours.loss_fn_outputs, theirs.loss_fn_outputs, strict=True):
        assert mine.keys() == other.keys()
        for name, td in mine.items():
            assert td.dtype == other[name].dtype
            assert list(td.dense_shape) == list(other[name].shape)
            assert td.data == other[name].data


@SETTINGS
@given(fbo_messages())
def test_forward_backward_output_decodes_like_official(body: bytes) -> None:
    theirs = response_conv.deserialize_forward_backward_output(body)
    ours = wire.decode_forward_backward_output(body)
    assert_same_fbo(ours, theirs)
    # and back: what we encode, the official decoder reads as the same output
    again = response_conv.deserialize_forward_backward_output(
        wire.encode_forward_backward_output(ours)
    )
    assert_same_fbo(ours, again, bare_type=True)


def test_forward_backward_output_widening_examples() -> None:
    msg = opb.ForwardBackwardOutput(loss_fn_output_type="pkg.mod:ArrayRecord")
    msg.metrics["loss:sum"] = 9.0
    record = msg.loss_fn_outputs.add(num_datums=2)
    ints = record.fields["ids"]
    ints.data, ints.offsets, ints.dtype = (
        np.array([-1, 2, -3], "<i4").tobytes(),
        np.array([0, 4, 12], "<i8").tobytes(),
        opb.DTYPE_INT32,
    )
    bf = record.fields["lp"]
    bf.data = np.array([0x3F80, 0xC000, 0x4040, 0x0000], "<u2").tobytes()  # 1.0, -2.0, 3.0, 0.0
    bf.offsets, bf.dtype = np.array([0, 4, 8], "<i8").tobytes(), opb.DTYPE_BFLOAT16
    bf.trailing_shape.append(2)
    out = wire.decode_forward_backward_output(msg.SerializeToString())
    assert out.loss_fn_output_type == "ArrayRecord"
    assert out.loss_fn_outputs[0]["ids"] == t.TensorData([-1], "int64", [1])
    assert out.loss_fn_outputs[1]["ids"].data == [2, -3]
    assert out.loss_fn_outputs[0]["lp"].to_list() == [[1.0, -2.0]]
    assert out.loss_fn_outputs[1]["lp"].to_list() == [[3.0, 0.0]]


def test_encoder_splits_ragged_outputs_into_records() -> None:
    output = t.ForwardBackwardOutput(
        loss_fn_output_type="ArrayRecord",
        loss_fn_outputs=[
            {
                "logprobs": t.TensorData([0.5, 1.5], "float32", [2]),
                "topk": t.TensorData([1, 2], "int64", [1, 2]),
            },
            {
                "logprobs": t.TensorData([2.5], "float32", [1]),
                "topk": t.TensorData([3, 4, 5], "int64", [1, 3]),
            },
            {"logprobs": t.TensorData([], "float32", [0])},
        ],
        metrics={"loss:sum": 1.0},
    )
    msg = opb.ForwardBackwardOutput()
    msg.ParseFromString(wire.encode_forward_backward_output(output))
    assert len(msg.loss_fn_outputs) == 2
    theirs = response_conv.deserialize_forward_backward_output(msg.SerializeToString())
    assert theirs.loss_fn_outputs[1]["topk"].shape == [1, 3]
    ours = wire.decode_forward_backward_output(msg.SerializeToString())
    assert ours.loss_fn_outputs[:2] == output.loss_fn_outputs[:2]
    assert ours.loss_fn_outputs[2]["topk"].dense_shape == (0, 3)  # a missing field reads back empty


# ============================================================================ SampleResponse

SENTINEL = (0, -99999.0)


@st.composite
def topk_messages(draw: Any, target: Any) -> None:
    n, k = draw(st.integers(0, 4)), draw(st.integers(0, 3))
    cells: list[tuple[int, float]] = []
    for _ in range(n):
        row_len = draw(st.integers(0, k))
        row = [(draw(TOKEN), draw(st.floats(-50, 0, width=32))) for _ in range(row_len)]
        cells.extend(row + [SENTINEL] * (k - row_len))
    target.token_ids = np.asarray([c[0] for c in cells], "<i4").tobytes()
    target.logprobs = np.asarray([c[1] for c in cells], "<f4").tobytes()
    target.k, target.length = k, n


def _tensor(msg: Any, sparse: bool, dtype: int) -> None:
    msg.dtype = dtype
    np_dtype = "<f4" if dtype == opb.DTYPE_FLOAT32 else "<i8"
    msg.shape.extend([2, 3])
    if sparse:
        msg.sparse_csr.values = np.array([1, 2], np_dtype).tobytes()
        msg.sparse_csr.crow_indices = np.array([0, 1, 2], "<i8").tobytes()
        msg.sparse_csr.col_indices = np.array([2, 0], "<i8").tobytes()
    else:
        msg.dense = np.arange(6, dtype=np_dtype).tobytes()


@st.composite
def sample_messages(draw: Any) -> bytes:
    msg = opb.SampleResponse()
    for _ in range(draw(st.integers(0, 3))):
        seq = msg.sequences.add()
        seq.stop_reason = draw(st.sampled_from([opb.STOP_REASON_STOP, opb.STOP_REASON_LENGTH]))
        tokens = draw(st.lists(TOKEN, max_size=6))
        seq.tokens = np.asarray(tokens, "<i4").tobytes()
        if draw(st.booleans()):
            seq.logprobs = np.asarray(
                draw(
                    st.lists(
                        st.floats(-20, 0, width=32), min_size=len(tokens), max_size=len(tokens)
                    )
                ),
                "<f4",
            ).tobytes()
        if draw(st.booleans()):
            draw(topk_messages(seq.topk_sampled_logprobs))
    if draw(st.booleans()):
        lps = draw(st.lists(st.floats(-20, 0, width=32) | st.just(math.nan), max_size=6))
        msg.prompt_logprobs = np.asarray(lps, "<f4").tobytes()
    if draw(st.booleans()):
        draw(topk_messages(msg.topk_prompt_logprobs))
    msg.prompt_cache_hit_tokens = draw(st.integers(0, 1000))
    if draw(st.booleans()):
        _tensor(msg.target_prompt_logprobs, draw(st.booleans()), opb.DTYPE_FLOAT32)
    if draw(st.booleans()):
        _tensor(msg.prompt_alt_tokens.tokens, False, opb.DTYPE_INT64)
        _tensor(msg.prompt_alt_tokens.logprobs, False, opb.DTYPE_FLOAT32)
    return msg.SerializeToString()


def _same_tensor(ours: t.TensorData | None, theirs: Any) -> None:
    if theirs is None:
        assert ours is None
        return
    assert ours is not None
    assert ours.dtype == theirs.dtype
    assert list(ours.dense_shape) == list(theirs.shape)
    assert ours.data == theirs.data
    assert ours.sparse_crow_indices == (
        tuple(theirs.sparse_crow_indices) if theirs.sparse_crow_indices is not None else None
    )
    assert ours.sparse_col_indices == (
        tuple(theirs.sparse_col_indices) if theirs.sparse_col_indices is not None else None
    )


def _rows(rows: Any) -> Any:
    return None if rows is None else [None if r is None else [tuple(c) for c in r] for r in rows]


def assert_same_sample(ours: t.SampleResponse, theirs: Any) -> None:
    assert len(ours.sequences) == len(theirs.sequences)
    for mine, other in zip(ours.sequences, theirs.sequences, strict=True):
        assert mine.stop_reason == other.stop_reason
        assert mine.tokens == other.tokens
        assert mine.logprobs == other.logprobs
        assert _rows(mine.topk_logprobs) == _rows(other.topk_logprobs)
    assert ours.prompt_logprobs == theirs.prompt_logprobs
    assert _rows(ours.topk_prompt_logprobs) == _rows(theirs.topk_prompt_logprobs)
    assert ours.prompt_cache_hit_tokens == theirs.prompt_cache_hit_tokens
    _same_tensor(ours.target_prompt_logprobs, theirs.target_prompt_logprobs)
    if theirs.prompt_alt_tokens is None:
        assert ours.prompt_alt_tokens is None
    else:
        assert ours.prompt_alt_tokens is not None
        _same_tensor(ours.prompt_alt_tokens.tokens, theirs.prompt_alt_tokens.tokens)
        _same_tensor(ours.prompt_alt_tokens.logprobs, theirs.prompt_alt_tokens.logprobs)


@SETTINGS
@given(sample_messages())
def test_sample_response_decodes_like_official(body: bytes) -> None:
    theirs = response_conv.deserialize_sample_response(body)
    ours = wire.decode_sample_response(body)
    assert_same_sample(ours, theirs)
    assert_same_sample(
        ours, response_conv.deserialize_sample_response(wire.encode_sample_response(ours))
    )


def test_sample_response_rules() -> None:
    msg = opb.SampleResponse(prompt_cache_hit_tokens=3)
    seq = msg.sequences.add(
        stop_reason=opb.STOP_REASON_LENGTH, tokens=np.array([5, 6], "<i4").tobytes()
    )
    seq.topk_sampled_logprobs.k, seq.topk_sampled_logprobs.length = 0, 2
    msg.prompt_logprobs = np.array([math.nan, -1.5, -0.25], "<f4").tobytes()
    topk = msg.topk_prompt_logprobs
    topk.k, topk.length = 2, 3
    topk.token_ids = np.array([0, 0, 7, 0, 8, 9], "<i4").tobytes()
    topk.logprobs = np.array([-99999.0, -99999.0, -0.5, -99999.0, -1.0, -2.0], "<f4").tobytes()
    out = wire.decode_sample_response(msg.SerializeToString())
    assert out.sequences[0].stop_reason == "length"
    assert out.sequences[0].tokens == [5, 6]
    assert out.sequences[0].logprobs is None
    assert out.sequences[0].topk_logprobs is None  # k == 0
    assert out.prompt_logprobs == [None, -1.5, -0.25]
    assert out.topk_prompt_logprobs == [None, [(7, -0.5)], [(8, -1.0), (9, -2.0)]]
    assert out.prompt_cache_hit_tokens == 3


# ============================================================================ malformed input


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xff\xff",
        b"\x0a\x05ab",  # truncated length-delimited field
        opb.SampleResponse(sequences=[opb.SampledSequence(stop_reason=7)]).SerializeToString(),
        opb.SampleResponse(
            sequences=[opb.SampledSequence(tokens=b"\x01\x02\x03")]
        ).SerializeToString(),
        opb.SampleResponse(
            topk_prompt_logprobs=opb.TopkLogprobs(
                k=2, length=2, token_ids=b"\x00" * 8, logprobs=b"\x00" * 16
            )
        ).SerializeToString(),
        opb.SampleResponse(
            target_prompt_logprobs=opb.Tensor(dense=b"\x00" * 8, dtype=opb.DTYPE_FLOAT32, shape=[3])
        ).SerializeToString(),
        opb.SampleResponse(
            target_prompt_logprobs=opb.Tensor(dense=b"\x00" * 8, dtype=opb.DTYPE_UNSPECIFIED)
        ).SerializeToString(),
    ],
)
def test_bad_sample_responses_raise_response_decode_error(body: bytes) -> None:
    with pytest.raises(ResponseDecodeError) as info:
        wire.decode_sample_response(body)
    assert info.value.expected == "SampleResponse (protobuf)"
    assert info.value.body.startswith(f"<{len(body)} bytes")


def _record(**fields: Any) -> bytes:
    msg = opb.ForwardBackwardOutput()
    record = msg.loss_fn_outputs.add(num_datums=fields.pop("num_datums", 1))
    bt = record.fields["x"]
    for key, value in fields.items():
        if key == "trailing_shape":
            bt.trailing_shape.extend(value)
        else:
            setattr(bt, key, value)
    return msg.SerializeToString()


@pytest.mark.parametrize(
    "body",
    [
        b"\x12\x03\x0a",
        _record(
            data=b"\x00" * 8, offsets=struct.pack("<2q", 0, 16), dtype=opb.DTYPE_INT64
        ),  # past the end
        _record(
            data=b"\x00" * 8, offsets=struct.pack("<2q", 0, 6), dtype=opb.DTYPE_INT64
        ),  # not element aligned
        _record(
            data=b"\x00" * 8, offsets=struct.pack("<2q", 8, 0), dtype=opb.DTYPE_INT64
        ),  # backwards
        _record(data=b"\x00" * 8, offsets=b"\x00" * 7, dtype=opb.DTYPE_INT64),
        _record(data=b"\x00" * 8, offsets=struct.pack("<2q", 0, 8), dtype=opb.DTYPE_UNSPECIFIED),
        _record(
            data=b"\x00" * 12,
            offsets=struct.pack("<2q", 0, 12),
            dtype=opb.DTYPE_FLOAT32,
            trailing_shape=[2],
        ),
        _record(
            data=b"\x00" * 8, offsets=struct.pack("<2q", 0, 8), dtype=opb.DTYPE_INT64, num_datums=3
        ),
    ],
)
def test_bad_forward_backward_outputs_raise_response_decode_error(body: bytes) -> None:
    with pytest.raises(ResponseDecodeError) as info:
        wire.decode_forward_backward_output(body)
    assert info.value.expected == "ForwardBackwardOutput (protobuf)"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_garbage_only_ever_raises_typed_errors(body: bytes) -> None:
    # Anything else escaping (DecodeError, IndexError, struct.error, ...) fails the test.
    for decode in (wire.decode_forward_backward_output, wire.decode_sample_response):
        with contextlib.suppress(ResponseDecodeError):
            decode(body)
    with contextlib.suppress(ValidationError):
        wire.decode_forward_backward_request(body)
