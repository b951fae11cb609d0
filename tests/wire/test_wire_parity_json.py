"""JSON wire parity with the official ``tinker`` SDK (0.38.0) as the oracle.

Requests: the same object built in both libraries gives the same JSON dict (ours: the bytes
of ``wire.encode_json`` parsed; theirs: ``model_dump(exclude_unset=False, exclude_none=True,
mode="json")``, exactly what its resources send). Responses: the same JSON fed to both decodes
to the same fields.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import tinker.types as T  # noqa: N812 - short oracle prefix
from tinker._compat import model_dump
from tinker.types._pydantic_types.datum import Datum as PDatum
from tinker.types._pydantic_types.forward_backward_input import ForwardBackwardInput as PFbInput
from tinker.types._pydantic_types.model_input import ModelInput as PModelInput
from tinker.types._pydantic_types.tensor_data import TensorData as PTensorData
from tinker.types.generic_event import GenericEvent as OfficialGenericEvent
from tinker.types.try_again_response import TryAgainResponse as OfficialTryAgain

from tinkex_actors import types as t
from tinkex_actors import wire
from tinkex_actors.errors import ResponseDecodeError

NOW = dt.datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=dt.UTC)
PNG = b"\x89PNG\r\n\x1a\n-image-bytes"


def official_body(model: Any) -> Any:
    return model_dump(model, exclude_unset=False, exclude_none=True, mode="json")


def ours_body(obj: Any) -> Any:
    body = orjson.loads(wire.encode_json(obj))
    assert body == orjson.loads(orjson.dumps(wire.to_jsonable(obj)))
    return body


# ------------------------------------------------------------------------------ inputs


def _datums() -> tuple[list[t.Datum], list[PDatum]]:
    ours = [
        t.Datum(
            t.ModelInput.from_ints([1, 2, 3]), {"target_tokens": [2, 3, 4], "weights": [0.1, 1, 0]}
        ),
        t.Datum(
            t.ModelInput(
                [
                    t.EncodedTextChunk([7]),
                    t.ImageChunk(data=PNG, format="png", expected_tokens=4),
                    t.ImageAssetPointerChunk(format="jpeg", location="https://x/y.jpg"),
                ]
            ),
            {
                "target_tokens": [[1, 2], [3, 4]],
                "advantages": [0.5, -0.25],
                "mask": t.TensorData([5, 9], "int64", [2, 3], [0, 1, 2], [2, 0]),
            },
        ),
    ]
    theirs = [
        PDatum(
            model_input=PModelInput.from_ints([1, 2, 3]),
            loss_fn_inputs={"target_tokens": [2, 3, 4], "weights": [0.1, 1, 0]},
        ),
        PDatum(
            model_input=PModelInput(
                chunks=[
                    T.EncodedTextChunk(tokens=[7]),
                    T.ImageChunk(data=PNG, format="png", expected_tokens=4),
                    T.ImageAssetPointerChunk(format="jpeg", location="https://x/y.jpg"),
                ]
            ),
            loss_fn_inputs={
                "target_tokens": [[1, 2], [3, 4]],
                "advantages": [0.5, -0.25],
                "mask": PTensorData(
                    data=[5, 9],
                    dtype="int64",
                    shape=[2, 3],
                    sparse_crow_indices=[0, 1, 2],
                    sparse_col_indices=[2, 0],
                ),
            },
        ),
    ]
    return ours, theirs


OUR_DATA, THEIR_DATA = _datums()
OUR_FBI = t.ForwardBackwardInput(
    data=OUR_DATA, loss_fn="ppo", loss_fn_config={"clip_low_threshold": 0.8, "loss_id": "l1"}
)
THEIR_FBI = PFbInput(
    data=THEIR_DATA, loss_fn="ppo", loss_fn_config={"clip_low_threshold": 0.8, "loss_id": "l1"}
)


def _event_kwargs() -> dict[str, Any]:
    return {"event_id": "e1", "event_session_index": 3, "severity": "WARNING", "timestamp": NOW}


REQUESTS: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = [
    (
        "client_config",
        lambda: t.ClientConfigRequest(sdk_version="0.38.0"),
        lambda: official_body(T.ClientConfigRequest(sdk_version="0.38.0")),
    ),
    (
        "create_session minimal",
        lambda: t.CreateSessionRequest(tags=[], sdk_version="0.38.0"),
        lambda: official_body(
            T.CreateSessionRequest(tags=[], user_metadata={}, sdk_version="0.38.0")
        ),
    ),
    (
        "create_session full",
        lambda: t.CreateSessionRequest(
            tags=["a", "b"],
            user_metadata={"k": {"n": None}},
            sdk_version="0.38.0",
            project_id="p",
            display_name="d",
        ),
        lambda: official_body(
            T.CreateSessionRequest(
                tags=["a", "b"],
                user_metadata={"k": {"n": None}},
                sdk_version="0.38.0",
                project_id="p",
                display_name="d",
            )
        ),
    ),
    (
        "heartbeat",
        lambda: t.SessionHeartbeatRequest(session_id="s"),
        lambda: official_body(T.SessionHeartbeatRequest(session_id="s")),
    ),
    # sessions/{id}/finish: the official client posts this dict literally (detail sent even if null)
    (
        "finish",
        lambda: t.SessionFinishRequest(),
        lambda: {"reason": {"type": "success"}, "detail": None},
    ),
    (
        "finish errored",
        lambda: t.SessionFinishRequest(
            reason=t.ClientSessionFinishReason(type="errored"), detail="boom"
        ),
        lambda: {"reason": {"type": "errored"}, "detail": "boom"},
    ),
    (
        "create_model",
        lambda: t.CreateModelRequest(
            session_id="s",
            model_seq_id=0,
            base_model="Qwen/Qwen3-8B",
            lora_config=t.LoraConfig(rank=32),
        ),
        lambda: official_body(
            T.CreateModelRequest(
                session_id="s",
                model_seq_id=0,
                base_model="Qwen/Qwen3-8B",
                lora_config=T.LoraConfig(rank=32),
            )
        ),
    ),
    (
        "create_model full",
        lambda: t.CreateModelRequest(
            session_id="s",
            model_seq_id=4,
            base_model="b",
            user_metadata={"x": 1},
            lora_config=t.LoraConfig(rank=8, seed=3, train_unembed=False),
            optimizer_config=t.OptimizerConfig(type="dimuon", version=1),
        ),
        lambda: official_body(
            T.CreateModelRequest(
                session_id="s",
                model_seq_id=4,
                base_model="b",
                user_metadata={"x": 1},
                lora_config=T.LoraConfig(rank=8, seed=3, train_unembed=False),
                optimizer_config=T.DimuonOptimizerConfig(),
            )
        ),
    ),
    (
        "get_info",
        lambda: t.GetInfoRequest(model_id="m"),
        lambda: official_body(T.GetInfoRequest(model_id="m")),
    ),
    (
        "unload_model",
        lambda: t.UnloadModelRequest(model_id="m"),
        lambda: official_body(T.UnloadModelRequest(model_id="m")),
    ),
    ("forward_backward_input", lambda: OUR_FBI, lambda: official_body(THEIR_FBI)),
    (
        "forward_backward_input no config",
        lambda: t.ForwardBackwardInput(data=OUR_DATA[:1], loss_fn="cross_entropy"),
        lambda: official_body(PFbInput(data=THEIR_DATA[:1], loss_fn="cross_entropy")),
    ),
    # Legacy JSON bodies: {"forward_backward_input"|"forward_input": ..., "model_id", "seq_id"}
    (
        "forward_backward request",
        lambda: t.ForwardBackwardRequest(forward_backward_input=OUR_FBI, model_id="m", seq_id=3),
        lambda: {"forward_backward_input": official_body(THEIR_FBI), "model_id": "m", "seq_id": 3},
    ),
    (
        "forward request",
        lambda: t.ForwardRequest(forward_input=OUR_FBI, model_id="m"),
        lambda: {"forward_input": official_body(THEIR_FBI), "model_id": "m"},
    ),
    (
        "optim_step",
        lambda: t.OptimStepRequest(
            adam_params=t.AdamParams(learning_rate=3e-4, weight_decay=0.01, grad_clip_norm=1),
            model_id="m",
            seq_id=2,
        ),
        lambda: official_body(
            T.OptimStepRequest(
                adam_params=T.AdamParams(learning_rate=3e-4, weight_decay=0.01, grad_clip_norm=1),
                model_id="m",
                seq_id=2,
            )
        ),
    ),
    (
        "optim_step dimuon",
        lambda: t.OptimStepRequest(
            optimizer_params=t.DimuonParams(learning_rate=0.02, grad_clip_norm=1, beta1=0.5),
            model_id="m",
            seq_id=3,
        ),
        lambda: official_body(
            T.OptimStepRequest(
                optim_params=T.DimuonParams(learning_rate=0.02, grad_clip_norm=1, beta1=0.5),
                model_id="m",
                seq_id=3,
            )
        ),
    ),
    (
        "optim_step dimuon defaults, built with of()",
        lambda: t.OptimStepRequest.of(t.DimuonParams(learning_rate=1e-3), "m"),
        lambda: official_body(
            T.OptimStepRequest(optim_params=T.DimuonParams(learning_rate=1e-3), model_id="m")
        ),
    ),
    (
        "optim_step adam via of()",
        lambda: t.OptimStepRequest.of(t.AdamParams(), "m", 1),
        lambda: official_body(
            T.OptimStepRequest(optim_params=T.AdamParams(), model_id="m", seq_id=1)
        ),
    ),
    (
        "create_model dimuon without a version",
        lambda: t.CreateModelRequest(
            session_id="s",
            model_seq_id=0,
            base_model="b",
            optimizer_config=t.OptimizerConfig(type="dimuon"),
        ),
        lambda: official_body(
            T.CreateModelRequest(
                session_id="s",
                model_seq_id=0,
                base_model="b",
                optimizer_config=T.DimuonOptimizerConfig(),
            )
        ),
    ),
    (
        "create_model default optimizer",
        lambda: t.CreateModelRequest(session_id="s", model_seq_id=0, base_model="b"),
        lambda: official_body(T.CreateModelRequest(session_id="s", model_seq_id=0, base_model="b")),
    ),
    (
        "load_weights dimuon",
        lambda: t.LoadWeightsRequest(
            session_id="s",
            model_seq_id=1,
            path="tinker://r/weights/a",
            optimizer=False,
            optimizer_config=t.OptimizerConfig(type="dimuon"),
        ),
        lambda: official_body(
            T.LoadWeightsRequest(
                session_id="s",
                model_seq_id=1,
                path="tinker://r/weights/a",
                optimizer=False,
                optimizer_config=T.DimuonOptimizerConfig(),
            )
        ),
    ),
    (
        "save_weights",
        lambda: t.SaveWeightsRequest(
            model_id="m",
            path="ckpt",
            seq_id=5,
            ttl_seconds=3600,
            overwrite=True,
            user_metadata={"a": "b"},
        ),
        lambda: official_body(
            T.SaveWeightsRequest(
                model_id="m",
                path="ckpt",
                seq_id=5,
                ttl_seconds=3600,
                overwrite=True,
                user_metadata={"a": "b"},
            )
        ),
    ),
    (
        "save_weights minimal",
        lambda: t.SaveWeightsRequest(model_id="m"),
        lambda: official_body(T.SaveWeightsRequest(model_id="m")),
    ),
    (
        "load_weights legacy",
        lambda: t.LoadWeightsRequest(
            model_id="m", seq_id=1, path="tinker://r/weights/a", optimizer=True
        ),
        lambda: official_body(
            T.LoadWeightsRequest(
                model_id="m", seq_id=1, path="tinker://r/weights/a", optimizer=True
            )
        ),
    ),
    (
        "load_weights create-via-load",
        lambda: t.LoadWeightsRequest(
            session_id="s",
            model_seq_id=2,
            base_model="b",
            user_metadata={"k": "v"},
            path="tinker://r/weights/a",
            optimizer=False,
            optimizer_config=t.OptimizerConfig(),
            weights_access_token="tok",
        ),
        lambda: official_body(
            T.LoadWeightsRequest(
                session_id="s",
                model_seq_id=2,
                base_model="b",
                user_metadata={"k": "v"},
                path="tinker://r/weights/a",
                optimizer=False,
                optimizer_config=T.AdamOptimizerConfig(),
                weights_access_token="tok",
            )
        ),
    ),
    (
        "save_weights_for_sampler named",
        lambda: t.SaveWeightsForSamplerRequest(model_id="m", path="s1", seq_id=9, ttl_seconds=7200),
        lambda: official_body(
            T.SaveWeightsForSamplerRequest(model_id="m", path="s1", seq_id=9, ttl_seconds=7200)
        ),
    ),
    (
        "save_weights_for_sampler unnamed inflight",
        lambda: t.SaveWeightsForSamplerRequest(
            model_id="m", sampling_session_seq_id=1, kind="inflight", user_metadata={"a": "b"}
        ),
        lambda: official_body(
            T.SaveWeightsForSamplerRequest(
                model_id="m", sampling_session_seq_id=1, kind="inflight", user_metadata={"a": "b"}
            )
        ),
    ),
    (
        "create_sampling_session base",
        lambda: t.CreateSamplingSessionRequest(
            session_id="s", sampling_session_seq_id=0, base_model="b"
        ),
        lambda: official_body(
            T.CreateSamplingSessionRequest(
                session_id="s", sampling_session_seq_id=0, base_model="b"
            )
        ),
    ),
    (
        "create_sampling_session path",
        lambda: t.CreateSamplingSessionRequest(
            session_id="s", sampling_session_seq_id=7, model_path="tinker://r/sampler_weights/x"
        ),
        lambda: official_body(
            T.CreateSamplingSessionRequest(
                session_id="s", sampling_session_seq_id=7, model_path="tinker://r/sampler_weights/x"
            )
        ),
    ),
    (
        "sample minimal",
        lambda: t.SampleRequest(
            prompt=t.ModelInput.from_ints([1, 2]),
            sampling_params=t.SamplingParams(max_tokens=3, temperature=0.7),
        ),
        lambda: official_body(
            T.SampleRequest(
                prompt=T.ModelInput.from_ints([1, 2]),
                sampling_params=T.SamplingParams(max_tokens=3, temperature=0.7),
            )
        ),
    ),
    (
        "sample full",
        lambda: t.SampleRequest(
            num_samples=4,
            prompt=t.ModelInput(
                [t.EncodedTextChunk([1, 2, 3]), t.ImageChunk(data=PNG, format="jpeg")]
            ),
            sampling_params=t.SamplingParams(
                max_tokens=16, seed=7, stop=["\n\n", "END"], temperature=0, top_k=40, top_p=0.9
            ),
            base_model="b",
            model_path="tinker://r/sampler_weights/x",
            sampling_session_id="s:sample:0",
            seq_id=1_000_000_001,
            prompt_logprobs=True,
            topk_prompt_logprobs=5,
            topk_sample_logprobs=2,
            target_prompt_logprobs=t.TensorData([3, -1, 4, 5], "int64", [2, 2]),
            prompt_alt_tokens_k=3,
            prompt_logprobs_last_n=2,
            record_stability_info=False,
        ),
        lambda: official_body(
            T.SampleRequest(
                num_samples=4,
                prompt=T.ModelInput(
                    chunks=[
                        T.EncodedTextChunk(tokens=[1, 2, 3]),
                        T.ImageChunk(data=PNG, format="jpeg"),
                    ]
                ),
                sampling_params=T.SamplingParams(
                    max_tokens=16, seed=7, stop=["\n\n", "END"], temperature=0, top_k=40, top_p=0.9
                ),
                base_model="b",
                model_path="tinker://r/sampler_weights/x",
                sampling_session_id="s:sample:0",
                seq_id=1_000_000_001,
                prompt_logprobs=True,
                topk_prompt_logprobs=5,
                topk_sample_logprobs=2,
                target_prompt_logprobs=PTensorData(data=[3, -1, 4, 5], dtype="int64", shape=[2, 2]),
                prompt_alt_tokens_k=3,
                prompt_logprobs_last_n=2,
                record_stability_info=False,
            )
        ),
    ),
    (
        "sample sparse targets, stability info",
        lambda: t.SampleRequest(
            prompt=t.ModelInput.from_ints([1, 2, 3]),
            sampling_params=t.SamplingParams(max_tokens=2),
            sampling_session_id="s:sample:0",
            seq_id=3,
            prompt_logprobs=False,
            topk_sample_logprobs=3,
            target_prompt_logprobs=t.TensorData([4, 9], "int64", [2, 3], [0, 1, 2], [2, 0]),
            record_stability_info=True,
        ),
        lambda: official_body(
            T.SampleRequest(
                prompt=T.ModelInput.from_ints([1, 2, 3]),
                sampling_params=T.SamplingParams(max_tokens=2),
                sampling_session_id="s:sample:0",
                seq_id=3,
                prompt_logprobs=False,
                topk_sample_logprobs=3,
                target_prompt_logprobs=PTensorData(
                    data=[4, 9],
                    dtype="int64",
                    shape=[2, 3],
                    sparse_crow_indices=[0, 1, 2],
                    sparse_col_indices=[2, 0],
                ),
                record_stability_info=True,
            )
        ),
    ),
    (
        "sample stop tokens",
        lambda: t.SampleRequest(
            prompt=t.ModelInput.from_ints([1]),
            sampling_params=t.SamplingParams(max_tokens=1, stop=[128001, 128009]),
        ),
        lambda: official_body(
            T.SampleRequest(
                prompt=T.ModelInput.from_ints([1]),
                sampling_params=T.SamplingParams(max_tokens=1, stop=[128001, 128009]),
            )
        ),
    ),
    (
        "sample stop string",
        lambda: t.SampleRequest(
            prompt=t.ModelInput.from_ints([1]),
            sampling_params=t.SamplingParams(max_tokens=1, stop="</s>"),
        ),
        lambda: official_body(
            T.SampleRequest(
                prompt=T.ModelInput.from_ints([1]),
                sampling_params=T.SamplingParams(max_tokens=1, stop="</s>"),
            )
        ),
    ),
    (
        "retrieve_future",
        lambda: t.FutureRetrieveRequest(request_id="42", allow_metadata_only=True),
        lambda: official_body(T.FutureRetrieveRequest(request_id="42", allow_metadata_only=True)),
    ),
    (
        "telemetry",
        lambda: t.TelemetrySendRequest(
            events=[
                t.SessionStartEvent(**_event_kwargs()),
                t.SessionEndEvent(duration="PT12.5S", **_event_kwargs()),
                t.UnhandledExceptionEvent(
                    error_message="boom", error_type="ValueError", traceback="tb", **_event_kwargs()
                ),
                t.UnhandledExceptionEvent(
                    error_message="boom", error_type="ValueError", **_event_kwargs()
                ),
                t.GenericEvent(event_name="custom", event_data={"a": [1, 2]}, **_event_kwargs()),
                t.GenericEvent(event_name="bare", **_event_kwargs()),
            ],
            platform="linux",
            sdk_version="0.38.0",
            session_id="s",
            process_uuid="u",
        ),
        lambda: official_body(
            T.TelemetrySendRequest(
                events=[
                    T.SessionStartEvent(event="SESSION_START", **_event_kwargs()),
                    T.SessionEndEvent(event="SESSION_END", duration="PT12.5S", **_event_kwargs()),
                    T.UnhandledExceptionEvent(
                        event="UNHANDLED_EXCEPTION",
                        error_message="boom",
                        error_type="ValueError",
                        traceback="tb",
                        **_event_kwargs(),
                    ),
                    T.UnhandledExceptionEvent(
                        event="UNHANDLED_EXCEPTION",
                        error_message="boom",
                        error_type="ValueError",
                        **_event_kwargs(),
                    ),
                    OfficialGenericEvent(
                        event="GENERIC_EVENT",
                        event_name="custom",
                        event_data={"a": [1, 2]},
                        **_event_kwargs(),
                    ),
                    OfficialGenericEvent(
                        event="GENERIC_EVENT", event_name="bare", **_event_kwargs()
                    ),
                ],
                platform="linux",
                sdk_version="0.38.0",
                session_id="s",
                process_uuid="u",
            )
        ),
    ),
    # Bodies the official REST client writes as dict literals.
    (
        "weights_info",
        lambda: t.WeightsInfoRequest(tinker_path="tinker://r/weights/a"),
        lambda: {"tinker_path": "tinker://r/weights/a"},
    ),
    (
        "checkpoint ttl",
        lambda: t.CheckpointTtlRequest(ttl_seconds=86400),
        lambda: {"ttl_seconds": 86400},
    ),
    ("checkpoint ttl forever", lambda: t.CheckpointTtlRequest(), lambda: {"ttl_seconds": None}),
]


@pytest.mark.parametrize(
    ("ours", "theirs"), [(o, th) for _, o, th in REQUESTS], ids=[n for n, _, _ in REQUESTS]
)
def test_request_bodies_match_the_official_sdk(
    ours: Callable[[], Any], theirs: Callable[[], Any]
) -> None:
    assert ours_body(ours()) == theirs()


def test_every_request_type_is_covered() -> None:
    covered = {type(build()).__name__ for _, build, _ in REQUESTS}
    requests = {name for name in t.__all__ if name.endswith("Request")}
    assert requests <= covered, sorted(requests - covered)


# ------------------------------------------------------------------------------ responses

CHECKPOINT = {
    "checkpoint_id": "weights/a",
    "checkpoint_type": "training",
    "time": "2024-05-06T07:08:09.123Z",
    "tinker_path": "tinker://r/weights/a",
    "size_bytes": 1234,
    "public": True,
    "user_metadata": {"k": "v"},
    "expires_at": "2024-06-01T00:00:00+02:00",
}
RUN = {
    "training_run_id": "r",
    "base_model": "b",
    "model_owner": "o",
    "is_lora": True,
    "corrupted": False,
    "lora_rank": 16,
    "last_request_time": "2024-05-06T07:08:09Z",
    "last_checkpoint": CHECKPOINT,
    "last_sampler_checkpoint": {**CHECKPOINT, "checkpoint_type": "sampler", "time": 1714979289},
    "user_metadata": {"a": "b"},
}

RESPONSES: list[tuple[str, type, type, dict[str, Any]]] = [
    ("client_config empty", t.ClientConfigResponse, T.ClientConfigResponse, {}),
    (
        "client_config full",
        t.ClientConfigResponse,
        T.ClientConfigResponse,
        {
            "pjwt_auth_enabled": True,
            "credential_default_source": "credential_cmd",
            "sample_dispatch_bytes_semaphore_size": 1,
            "inflight_response_bytes_semaphore_size": 2,
            "parallel_fwdbwd_chunks": False,
            "proto_compress_fwdbwd": True,
            "fwdbwd_max_chunk_len": 7,
            "fwdbwd_max_chunk_bytes_count": 8,
            "fwdbwd_dispatch_bytes_semaphore_size": 9,
            "billing_exception_max_pause_duration_sec": 10,
            "sample_no_retries": True,
            "sample_enable_stuck_detection": False,
            "sample_max_concurrent_requests": 11,
            "use_pyqwest_transport": False,
            "sample_use_retrieve_futures": True,
            "custom_loss_server_side": True,
            "sample_join_sampling_session": True,
            "some_future_flag": [1, 2],
        },
    ),
    (
        "dynamic_config",
        t.ClientDynamicConfigResponse,
        T.ClientDynamicConfigResponse,
        {"refresh_interval_sec": 60, "sample_cancel_enabled": True},
    ),
    (
        "create_session",
        t.CreateSessionResponse,
        T.CreateSessionResponse,
        {"session_id": "s", "info_message": "hi", "warning_message": "careful"},
    ),
    ("heartbeat", t.SessionHeartbeatResponse, T.SessionHeartbeatResponse, {}),
    (
        "create_model",
        t.CreateModelResponse,
        T.CreateModelResponse,
        {"model_id": "m", "type": "create_model"},
    ),
    (
        "get_info",
        t.GetInfoResponse,
        T.GetInfoResponse,
        {
            "model_id": "m",
            "model_data": {"arch": "llama", "model_name": "b", "tokenizer_id": "tok"},
            "is_lora": True,
            "lora_rank": 8,
            "model_name": "b",
            "type": "get_info",
            "optimizer_config": {"type": "dimuon", "version": 1},
        },
    ),
    ("get_info minimal", t.GetInfoResponse, T.GetInfoResponse, {"model_id": "m", "model_data": {}}),
    ("unload_model", t.UnloadModelResponse, T.UnloadModelResponse, {"model_id": "m"}),
    (
        "optim_step",
        t.OptimStepResponse,
        T.OptimStepResponse,
        {"metrics": {"grad_norm:mean": 1.5, "lr:mean": 1}},
    ),
    ("optim_step empty", t.OptimStepResponse, T.OptimStepResponse, {}),
    (
        "save_weights",
        t.SaveWeightsResponse,
        T.SaveWeightsResponse,
        {"path": "tinker://r/weights/a", "type": "save_weights"},
    ),
    (
        "load_weights",
        t.LoadWeightsResponse,
        T.LoadWeightsResponse,
        {"path": "tinker://r/weights/a", "model_id": "s:train:0"},
    ),
    ("load_weights empty", t.LoadWeightsResponse, T.LoadWeightsResponse, {}),
    (
        "sampler save",
        t.SaveWeightsForSamplerResponse,
        T.SaveWeightsForSamplerResponse,
        {"path": "tinker://r/sampler_weights/a"},
    ),
    (
        "sampler save internal",
        t.SaveWeightsForSamplerResponseInternal,
        T.SaveWeightsForSamplerResponseInternal,
        {"sampling_session_id": "s:sample:1"},
    ),
    (
        "create_sampling_session",
        t.CreateSamplingSessionResponse,
        T.CreateSamplingSessionResponse,
        {"sampling_session_id": "s:sample:0"},
    ),
    (
        "get_sampler",
        t.GetSamplerResponse,
        T.GetSamplerResponse,
        {"sampler_id": "x", "base_model": "b", "model_path": "tinker://r/sampler_weights/a"},
    ),
    ("future", t.UntypedAPIFuture, T.UntypedAPIFuture, {"request_id": "7", "model_id": "m"}),
    (
        "sample future",
        t.UntypedAPIFuture,
        T.UntypedAPIFuture,
        {"request_id": "8", "sample_sequence_ids": ["a", "b"]},
    ),
    (
        "try_again",
        t.TryAgainResponse,
        OfficialTryAgain,
        {"type": "try_again", "request_id": "7", "queue_state": "paused_capacity"},
    ),
    (
        "failed",
        t.RequestFailedResponse,
        T.RequestFailedResponse,
        {"error": "bad input", "category": "user"},
    ),
    (
        "capabilities",
        t.GetServerCapabilitiesResponse,
        T.GetServerCapabilitiesResponse,
        {
            "supported_models": [
                {"model_name": "b", "max_context_length": 4096, "trainable": True},
                {},
            ]
        },
    ),
    ("healthz", t.HealthResponse, T.HealthResponse, {"status": "ok"}),
    ("telemetry", t.TelemetryResponse, T.TelemetryResponse, {"status": "accepted"}),
    ("cursor", t.Cursor, T.Cursor, {"offset": 0, "limit": 20, "total_count": 55}),
    ("checkpoint", t.Checkpoint, T.Checkpoint, CHECKPOINT),
    ("training_run", t.TrainingRun, T.TrainingRun, RUN),
    (
        "training_runs",
        t.TrainingRunsResponse,
        T.TrainingRunsResponse,
        {"training_runs": [RUN], "cursor": {"offset": 20, "limit": 20, "total_count": 21}},
    ),
    (
        "checkpoints",
        t.CheckpointsListResponse,
        T.CheckpointsListResponse,
        {"checkpoints": [CHECKPOINT]},
    ),
    ("list_sessions", t.ListSessionsResponse, T.ListSessionsResponse, {"sessions": ["a", "b"]}),
    (
        "get_session",
        t.GetSessionResponse,
        T.GetSessionResponse,
        {"training_run_ids": ["r"], "sampler_ids": [], "display_name": "d"},
    ),
    (
        "weights_info",
        t.WeightsInfoResponse,
        T.WeightsInfoResponse,
        {
            "base_model": "b",
            "is_lora": True,
            "lora_rank": 32,
            "train_unembed": False,
            "train_mlp": True,
            "train_attn": True,
        },
    ),
    (
        "weights_info dimuon",
        t.WeightsInfoResponse,
        T.WeightsInfoResponse,
        {
            "base_model": "b",
            "is_lora": True,
            "lora_rank": 8,
            "optimizer_config": {"type": "dimuon", "version": 1},
        },
    ),
    (
        "get_info adamw",
        t.GetInfoResponse,
        T.GetInfoResponse,
        {"model_id": "m", "model_data": {}, "optimizer_config": {"type": "adamw"}},
    ),
]


def _no_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _no_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_no_none(v) for v in value]
    return value


@pytest.mark.parametrize(
    ("ours_cls", "their_cls", "body"),
    [(o, th, b) for _, o, th, b in RESPONSES],
    ids=[n for n, *_ in RESPONSES],
)
def test_responses_decode_like_the_official_sdk(
    ours_cls: type, their_cls: Any, body: dict[str, Any]
) -> None:
    raw = orjson.dumps(body)
    ours = wire.decode_json(ours_cls, raw)
    theirs = their_cls.model_validate(orjson.loads(raw))
    ours_fields = _no_none(wire.to_jsonable(ours))
    their_fields = _no_none(theirs.model_dump(mode="json"))
    if ours_cls is t.ClientConfigResponse and "fwdbwd_max_chunk_len" not in body:
        # Ours keeps "not announced" (None) so chunking can fall back to the seed limits.
        for key in ("fwdbwd_max_chunk_len", "fwdbwd_max_chunk_bytes_count"):
            assert getattr(ours, key) is None
            their_fields.pop(key)
    assert ours_fields == their_fields


def test_datetimes_are_the_same_instants() -> None:
    ours = wire.decode_json(t.TrainingRun, orjson.dumps(RUN))
    theirs = T.TrainingRun.model_validate(RUN)
    assert ours.last_request_time == theirs.last_request_time
    assert ours.last_checkpoint is not None
    assert theirs.last_checkpoint is not None
    assert ours.last_checkpoint.expires_at == theirs.last_checkpoint.expires_at
    assert ours.last_sampler_checkpoint is not None
    assert theirs.last_sampler_checkpoint is not None
    assert ours.last_sampler_checkpoint.time == theirs.last_sampler_checkpoint.time


def test_every_response_type_is_covered() -> None:
    covered = {cls.__name__ for _, cls, _, _ in RESPONSES}
    responses = {name for name in t.__all__ if name.endswith("Response")}
    # Ours only (no 0.38 counterpart): the archive URL (0.25) and the metadata-only answer
    # (a plain dict upstream); SampleResponse is protobuf (see test_wire_parity_proto).
    ours_only = {"CheckpointArchiveUrlResponse", "FutureMetadataResponse", "SampleResponse"}
    assert responses - ours_only <= covered, sorted(responses - ours_only - covered)


@pytest.mark.parametrize(
    ("ours_cls", "their_cls", "body"),
    [
        (t.UntypedAPIFuture, T.UntypedAPIFuture, {"request_id": 5}),
        (t.CreateModelResponse, T.CreateModelResponse, {}),
        (t.CreateModelResponse, T.CreateModelResponse, {"model_id": "m", "type": "get_info"}),
        (t.TryAgainResponse, OfficialTryAgain, {"request_id": "1"}),
        (t.TrainingRun, T.TrainingRun, {**RUN, "last_request_time": "yesterday"}),
        (t.Checkpoint, T.Checkpoint, {**CHECKPOINT, "checkpoint_type": "backup"}),
        (t.GetSessionResponse, T.GetSessionResponse, {"training_run_ids": "r", "sampler_ids": []}),
        (t.HealthResponse, T.HealthResponse, {"status": "degraded"}),
        (t.Cursor, T.Cursor, {"offset": 0, "limit": [1], "total_count": 1}),
    ],
)
def test_both_reject_malformed_responses(
    ours_cls: type, their_cls: Any, body: dict[str, Any]
) -> None:
    import pydantic

    with pytest.raises(pydantic.ValidationError):
        their_cls.model_validate(body)
    with pytest.raises(ResponseDecodeError) as info:
        wire.decode_json(ours_cls, orjson.dumps(body))
    assert info.value.body  # an excerpt of what the server sent
    assert info.value.expected == f"{ours_cls.__name__} (JSON)"


def test_tinker_paths_parse_like_the_official_sdk() -> None:
    for path in (
        "tinker://r/weights/a",
        "tinker://s:train:1/sampler_weights/b",
        "tinker://r/external_weights/c",
    ):
        ours = t.ParsedCheckpointTinkerPath.from_tinker_path(path)
        theirs = T.ParsedCheckpointTinkerPath.from_tinker_path(path)
        assert wire.to_jsonable(ours) == theirs.model_dump(mode="json")
