"""The JSON codec's own contract: encode/decode round trips, the fast path, typed errors,
retrieve_future answers, legacy JSON result shapes."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinkex_actors import types as t
from tinkex_actors import wire
from tinkex_actors.errors import RequestErrorCategory, ResponseDecodeError, ValidationError

TOKEN = st.integers(min_value=0, max_value=2**31 - 1)


@st.composite
def datums(draw: Any) -> t.Datum:
    n = draw(st.integers(0, 12))
    tokens = draw(st.lists(TOKEN, min_size=n, max_size=n))
    weights = draw(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=n, max_size=n))
    as_numpy = draw(st.booleans())
    inputs: dict[str, Any] = {
        "target_tokens": np.asarray(tokens, dtype=np.int64) if as_numpy else tokens,
        "weights": np.asarray(weights, dtype=np.float64) if as_numpy else weights,
    }
    chunks: list[t.ModelInputChunk] = [
        t.EncodedTextChunk(np.asarray(tokens, dtype=np.int64) if as_numpy else tokens)
    ]
    if draw(st.booleans()):
        chunks.append(
            t.ImageChunk(data=draw(st.binary(max_size=8)), format="png", expected_tokens=3)
        )
    spans = {}
    if draw(st.booleans()):
        spans = {
            "model_input_spans": [t.PromptProvenanceSpan(sequence_id="a", length=n)],
            "loss_fn_input_spans": [t.SampledProvenanceSpan(sequence_id="b", offset=2, length=n)],
        }
    return t.Datum(t.ModelInput(chunks), inputs, **spans)


@settings(max_examples=40, deadline=None)
@given(st.lists(datums(), max_size=3), st.none() | st.integers(0, 10**9))
def test_fast_json_path_equals_the_converter(data: list[t.Datum], seq_id: int | None) -> None:
    fbi = t.ForwardBackwardInput(
        data=data, loss_fn="ppo", loss_fn_config={"clip_low_threshold": 0.5}
    )
    for obj in (
        fbi,
        t.ForwardBackwardRequest(forward_backward_input=fbi, model_id="m", seq_id=seq_id),
        t.ForwardRequest(forward_input=fbi, model_id="m", seq_id=seq_id),
        *data,
        *(d.model_input for d in data),
        *(td for d in data for td in d.loss_fn_inputs.values()),
    ):
        assert orjson.loads(wire.encode_json(obj)) == wire.to_jsonable(obj)


@settings(max_examples=40, deadline=None)
@given(st.lists(datums(), max_size=3))
def test_forward_backward_request_json_round_trip(data: list[t.Datum]) -> None:
    request = t.ForwardBackwardRequest(
        forward_backward_input=t.ForwardBackwardInput(data=data, loss_fn="cross_entropy"),
        model_id="m",
        seq_id=1,
    )
    assert wire.decode_json_request(t.ForwardBackwardRequest, wire.encode_json(request)) == request


ROUND_TRIP = [
    t.ClientConfigRequest(),
    t.CreateSessionRequest(tags=["x"], user_metadata={"a": [1, {"b": None}]}, project_id="p"),
    t.SessionHeartbeatRequest(session_id="s"),
    t.SessionFinishRequest(reason=t.ClientSessionFinishReason(type="interrupted")),
    t.CreateModelRequest(
        session_id="s", model_seq_id=1, base_model="b", lora_config=t.LoraConfig(rank=4, seed=1)
    ),
    t.GetInfoRequest(model_id="m"),
    t.UnloadModelRequest(model_id="m"),
    t.OptimStepRequest(adam_params=t.AdamParams(learning_rate=0.5), model_id="m", seq_id=4),
    t.SaveWeightsRequest(model_id="m", path="p", ttl_seconds=3600, user_metadata={"k": "v"}),
    t.LoadWeightsRequest(
        session_id="s", model_seq_id=0, path="tinker://r/weights/p", optimizer=True
    ),
    t.SaveWeightsForSamplerRequest(model_id="m", sampling_session_seq_id=2),
    t.CreateSamplingSessionRequest(session_id="s", sampling_session_seq_id=0, base_model="b"),
    t.SampleRequest(
        prompt=t.ModelInput(
            [
                t.EncodedTextChunk([1, 2]),
                t.ImageAssetPointerChunk(format="png", location="u", expected_tokens=2),
            ]
        ),
        sampling_params=t.SamplingParams(max_tokens=2, stop=[3, 4], seed=9),
        target_prompt_logprobs=t.TensorData([1, 2], "int64", [1, 3], [0, 2], [0, 2]),
        prompt_logprobs=True,
        prompt_logprobs_last_n=1,
    ),
    t.SampleRequest(prompt=t.ModelInput.from_ints([1]), sampling_params=t.SamplingParams(stop="x")),
    t.FutureRetrieveRequest(request_id="1", allow_metadata_only=True),
    t.WeightsInfoRequest(tinker_path="tinker://r/weights/a"),
    t.CheckpointTtlRequest(),
    t.TelemetrySendRequest(
        events=[
            t.GenericEvent(
                event_id="e",
                event_session_index=0,
                severity="INFO",
                timestamp=dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=2))),
                event_name="n",
                event_data={"x": 1},
            ),
            t.SessionEndEvent(
                event_id="e2",
                event_session_index=1,
                severity="DEBUG",
                timestamp=dt.datetime(2024, 1, 1),
                duration="PT1S",
            ),
        ],
        platform="p",
        sdk_version="1",
        session_id="s",
        process_uuid="u",
    ),
    t.ForwardBackwardOutput(
        loss_fn_output_type="ArrayRecord",
        loss_fn_outputs=[{"logprobs": t.TensorData([-0.5, -1.0], "float32", [2])}],
        metrics={"loss:sum": 1.5},
    ),
    t.SampleResponse(
        sequences=[
            t.SampledSequence(
                stop_reason="stop",
                tokens=[1, 2],
                logprobs=[-0.5, -1.0],
                topk_logprobs=[[(1, -0.5)], None],
                sequence_id="q",
            )
        ],
        prompt_logprobs=[None, -0.25],
        topk_prompt_logprobs=[None, [(4, -0.25), (5, -2.0)]],
        prompt_cache_hit_tokens=1,
    ),
    t.CheckpointArchiveUrlResponse(
        url="https://x/y", expires=dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    ),
    t.ParsedCheckpointTinkerPath.from_tinker_path("tinker://r/sampler_weights/x"),
    t.FutureMetadataResponse(response_payload_size=10),
    t.TryAgainResponse(request_id="1", queue_state="paused_rate_limit", queue_state_reason="busy"),
]


@pytest.mark.parametrize("obj", ROUND_TRIP, ids=lambda o: type(o).__name__)
def test_every_type_round_trips_through_json(obj: Any) -> None:
    body = wire.encode_json(obj)
    assert orjson.loads(body) == wire.to_jsonable(obj)
    assert wire.decode_json(type(obj), body) == obj
    assert wire.decode_json_request(type(obj), body) == obj
    assert wire.from_jsonable(type(obj), orjson.loads(body)) == obj


def test_none_defaults_are_omitted_and_tags_always_sent() -> None:
    body = orjson.loads(wire.encode_json(t.SaveWeightsRequest(model_id="m")))
    assert body == {"model_id": "m", "overwrite": False, "type": "save_weights"}
    chunk = orjson.loads(wire.encode_json(t.ImageChunk(data=b"\x00\xff", format="png")))
    assert chunk == {"data": "AP8=", "format": "png", "type": "image"}


def test_nan_becomes_null_and_null_reads_back_as_nan() -> None:
    td = t.TensorData([math.nan, 1.0], "float32")
    assert orjson.loads(wire.encode_json(td)) == {"data": [None, 1.0], "dtype": "float32"}
    back = wire.decode_json(t.TensorData, b'{"data": [null, 1.0], "dtype": "float32"}')
    assert math.isnan(back.data[0])


@pytest.mark.parametrize(
    ("cls", "body", "needle"),
    [
        (t.UntypedAPIFuture, b"not json", "not valid JSON"),
        (t.UntypedAPIFuture, b"[]", "expected a JSON object"),
        (t.UntypedAPIFuture, b"{}", "required field missing @ $.request_id"),
        (t.UntypedAPIFuture, b'{"request_id": 12}', "$.request_id"),
        (
            t.UntypedAPIFuture,
            b'{"request_id": "1", "sample_sequence_ids": "ab"}',
            "$.sample_sequence_ids",
        ),
        (t.CreateModelResponse, b'{"model_id": "m", "type": "other"}', "$.type"),
        (t.OptimStepResponse, b'{"metrics": {"a": "1"}}', "$.metrics"),
        (t.OptimStepResponse, b'{"metrics": {"a": true}}', "$.metrics"),
        (t.OptimStepResponse, b'{"metrics": [["a", 1.0]]}', "expected an object"),
        (
            t.GetSessionResponse,
            b'{"training_run_ids": "r", "sampler_ids": []}',
            "expected an array",
        ),
        (t.ClientConfigResponse, b'{"fwdbwd_max_chunk_len": 0}', "fwdbwd_max_chunk_len"),
        (t.ClientConfigResponse, b'{"parallel_fwdbwd_chunks": 1}', "$.parallel_fwdbwd_chunks"),
        (
            t.Checkpoint,
            b'{"checkpoint_id":"a","checkpoint_type":"training","time":"later","tinker_path":"x"}',
            "$.time",
        ),
        (
            t.SampleResponse,
            b'{"sequences": [{"stop_reason": "stop", "tokens": [1, "2"]}]}',
            "sequences",
        ),
        (
            t.SampleResponse,
            b'{"sequences": [], "topk_prompt_logprobs": [[[1]]]}',
            "topk_prompt_logprobs",
        ),
        (
            t.ForwardBackwardOutput,
            (
                b'{"loss_fn_output_type": "A", "loss_fn_outputs": '
                b'[{"x": {"data": [1], "dtype": "int8"}}]}'
            ),
            "int8",
        ),
        (
            t.ForwardBackwardOutput,
            (
                b'{"loss_fn_output_type": "A", "loss_fn_outputs": '
                b'[{"x": {"data": [1, 2], "dtype": "int64", "shape": [3]}}]}'
            ),
            "shape",
        ),
        (t.ImageChunk, b'{"data": "***", "format": "png"}', "base64"),
        (
            t.SampleRequest,
            b'{"prompt": {"chunks": [{"type": "video"}]}, "sampling_params": {}}',
            "video",
        ),
    ],
)
def test_malformed_responses_raise_response_decode_error(
    cls: type, body: bytes, needle: str
) -> None:
    with pytest.raises(ResponseDecodeError) as info:
        wire.decode_json(cls, body)
    assert needle in str(info.value)
    assert info.value.body == body.decode()
    assert info.value.expected == f"{cls.__name__} (JSON)"
    with pytest.raises(ValidationError) as request_info:
        wire.decode_json_request(cls, body)
    assert request_info.value.field == "body"


def test_unknown_keys_are_ignored() -> None:
    future = wire.decode_json(t.UntypedAPIFuture, b'{"request_id": "1", "new_field": {"x": 1}}')
    assert future == t.UntypedAPIFuture(request_id="1")


def test_request_failed_category() -> None:
    assert (
        wire.decode_json(t.RequestFailedResponse, b'{"error": "e", "category": "user"}').category
        is RequestErrorCategory.USER
    )
    assert (
        wire.decode_json(t.RequestFailedResponse, b'{"error": "e", "category": "?"}').category
        is RequestErrorCategory.UNKNOWN
    )


def test_untagged_chunks_are_recognised() -> None:
    mi = wire.decode_json(
        t.ModelInput, b'{"chunks": [{"tokens": [1, 2]}, {"location": "u", "format": "png"}]}'
    )
    assert mi.chunks == (
        t.EncodedTextChunk([1, 2]),
        t.ImageAssetPointerChunk(format="png", location="u"),
    )


# ------------------------------------------------------------------------------ futures

FBO_JSON = {
    "loss_fn_output_type": "ArrayRecord",
    "loss_fn_outputs": [
        {"logprobs": {"data": [-0.5, -1.5], "dtype": "float32", "shape": [2]}},
        {"logprobs": {"data": [-2.0], "dtype": "float32", "shape": [1]}},
    ],
    "metrics": {"loss:sum": 4.0},
}
SAMPLE_JSON = {
    "sequences": [{"stop_reason": "length", "tokens": [5, 6], "logprobs": [-0.5, -0.25]}],
    "prompt_logprobs": [None, -1.0],
    "topk_prompt_logprobs": [None, [[3, -1.0], [4, -2.0]]],
    "prompt_cache_hit_tokens": 2,
    "type": "sample",
}


def test_future_answers_are_classified() -> None:
    try_again = wire.decode_future_answer(
        t.OptimStepResponse, b'{"type": "try_again", "request_id": "1", "queue_state": "active"}'
    )
    assert try_again == t.TryAgainResponse(request_id="1", queue_state="active")
    failed = wire.decode_future_answer(
        t.OptimStepResponse, b'{"error": "oops", "category": "server"}', "application/json"
    )
    assert failed == t.RequestFailedResponse(error="oops", category=RequestErrorCategory.SERVER)
    meta = wire.decode_future_answer(
        t.SampleResponse, b'{"status": "complete_metadata", "response_payload_size": 99}'
    )
    assert meta == t.FutureMetadataResponse(response_payload_size=99)
    result = wire.decode_future_answer(t.OptimStepResponse, b'{"metrics": {"lr:mean": 0.1}}')
    assert result == t.OptimStepResponse(metrics={"lr:mean": 0.1})


def test_legacy_json_results_equal_their_protobuf_form() -> None:
    from_json = wire.decode_future_answer(
        t.ForwardBackwardOutput, orjson.dumps(FBO_JSON), "application/json"
    )
    assert isinstance(from_json, t.ForwardBackwardOutput)
    proto = wire.encode_forward_backward_output(from_json)
    assert (
        wire.decode_future_answer(t.ForwardBackwardOutput, proto, "application/x-protobuf")
        == from_json
    )
    sample = wire.decode_future_answer(t.SampleResponse, orjson.dumps(SAMPLE_JSON))
    assert isinstance(sample, t.SampleResponse)
    assert sample.topk_prompt_logprobs == [None, [(3, -1.0), (4, -2.0)]]
    proto = wire.encode_sample_response(sample)
    assert (
        wire.decode_future_answer(t.SampleResponse, proto, "application/x-protobuf; charset=binary")
        == sample
    )


def test_future_answer_errors() -> None:
    with pytest.raises(ResponseDecodeError, match="travels as JSON"):
        wire.decode_future_answer(t.OptimStepResponse, b"\x00", "application/x-protobuf")
    with pytest.raises(ResponseDecodeError, match="not valid JSON"):
        wire.decode_future_answer(t.OptimStepResponse, b"<html>")
    with pytest.raises(ResponseDecodeError):
        wire.decode_future_answer(t.SaveWeightsResponse, b'{"type": "try_again"}')


def test_wire_public_surface() -> None:
    assert wire.__all__ == sorted(wire.__all__)
    for name in wire.__all__:
        assert getattr(wire, name) is not None


def test_sealing_a_forward_backward_body_sets_its_seq_id_and_model_id() -> None:
    import zstandard

    from tinkex_actors import types
    from tinkex_actors.wire import (
        decode_forward_backward_request,
        encode_forward_backward_request,
        seal_forward_backward,
    )

    tokens = [1, 2, 3]
    request = types.ForwardBackwardRequest(
        forward_backward_input=types.ForwardBackwardInput(
            data=[
                types.Datum(
                    types.ModelInput.from_ints(tokens),
                    {"target_tokens": [2, 3, 4], "weights": [1.0, 1.0, 1.0]},
                )
            ],
            loss_fn="cross_entropy",
        ),
        model_id="old-model",
    )
    body = encode_forward_backward_request(request)
    sealed, _ = decode_forward_backward_request(seal_forward_backward(body, 7))
    assert (sealed.seq_id, sealed.model_id) == (7, "old-model")
    moved = seal_forward_backward(body, 8, model_id="new-model", zstd=True)
    restored, _ = decode_forward_backward_request(zstandard.ZstdDecompressor().decompress(moved))
    assert (restored.seq_id, restored.model_id) == (8, "new-model")
    assert restored.forward_backward_input == request.forward_backward_input
