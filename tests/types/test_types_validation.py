"""Every request type rejects wrong types and values with a ValidationError naming the field;
response types check their annotations; tinker:// paths parse or raise InvalidTinkerPathError."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any, get_args

import numpy as np
import orjson
import pytest

from tinkex_actors import types as t
from tinkex_actors.errors import InvalidTinkerPathError, ValidationError
from tinkex_actors.wire import to_jsonable

MI = t.ModelInput.from_ints([1, 2])
SP = t.SamplingParams(max_tokens=4)
DATUM = t.Datum(MI, {"target_tokens": [2, 3], "weights": [1, 1]})
NOW = dt.datetime(2024, 1, 2, tzinfo=dt.UTC)


def _event(**kw: Any) -> dict[str, Any]:
    return {"event_id": "e", "event_session_index": 0, "severity": "INFO", "timestamp": NOW, **kw}


BAD: list[tuple[str, Any, str]] = [
    # LoRA, optimizer
    ("rank 0", lambda: t.LoraConfig(rank=0), "LoraConfig.rank"),
    ("rank bool", lambda: t.LoraConfig(rank=True), "LoraConfig.rank"),
    ("rank float", lambda: t.LoraConfig(rank=8.0), "LoraConfig.rank"),
    ("seed str", lambda: t.LoraConfig(rank=8, seed="1"), "LoraConfig.seed"),
    ("train flag int", lambda: t.LoraConfig(rank=8, train_mlp=1), "LoraConfig.train_mlp"),
    (
        "no train flag",
        lambda: t.LoraConfig(rank=8, train_unembed=False, train_mlp=False, train_attn=False),
        "LoraConfig.train_attn",
    ),
    ("lr negative", lambda: t.AdamParams(learning_rate=-1e-4), "AdamParams.learning_rate"),
    ("lr nan", lambda: t.AdamParams(learning_rate=math.nan), "AdamParams.learning_rate"),
    ("lr bool", lambda: t.AdamParams(learning_rate=True), "AdamParams.learning_rate"),
    ("beta1 = 1", lambda: t.AdamParams(beta1=1.0), "AdamParams.beta1"),
    ("eps 0", lambda: t.AdamParams(eps=0), "AdamParams.eps"),
    ("clip negative", lambda: t.AdamParams(grad_clip_norm=-1), "AdamParams.grad_clip_norm"),
    # sampling
    ("max_tokens 0", lambda: t.SamplingParams(max_tokens=0), "SamplingParams.max_tokens"),
    ("max_tokens bool", lambda: t.SamplingParams(max_tokens=True), "SamplingParams.max_tokens"),
    ("temperature < 0", lambda: t.SamplingParams(temperature=-0.1), "SamplingParams.temperature"),
    (
        "temperature inf",
        lambda: t.SamplingParams(temperature=math.inf),
        "SamplingParams.temperature",
    ),
    ("top_p 0", lambda: t.SamplingParams(top_p=0), "SamplingParams.top_p"),
    ("top_p > 1", lambda: t.SamplingParams(top_p=1.01), "SamplingParams.top_p"),
    ("top_k -2", lambda: t.SamplingParams(top_k=-2), "SamplingParams.top_k"),
    ("stop mixed", lambda: t.SamplingParams(stop=["a", 1]), "SamplingParams.stop"),
    ("stop bools", lambda: t.SamplingParams(stop=[True]), "SamplingParams.stop"),
    ("stop bytes", lambda: t.SamplingParams(stop=b"x"), "SamplingParams.stop"),
    ("stop int", lambda: t.SamplingParams(stop=5), "SamplingParams.stop"),
    (
        "num_samples 0",
        lambda: t.SampleRequest(prompt=MI, sampling_params=SP, num_samples=0),
        "SampleRequest.num_samples",
    ),
    (
        "prompt list",
        lambda: t.SampleRequest(prompt=[1, 2], sampling_params=SP),
        "SampleRequest.prompt",
    ),
    (
        "params dict",
        lambda: t.SampleRequest(prompt=MI, sampling_params={}),
        "SampleRequest.sampling_params",
    ),
    (
        "model_path scheme",
        lambda: t.SampleRequest(prompt=MI, sampling_params=SP, model_path="s3://x"),
        "SampleRequest.model_path",
    ),
    (
        "last_n without prompt logprobs",
        lambda: t.SampleRequest(prompt=MI, sampling_params=SP, prompt_logprobs_last_n=2),
        "SampleRequest.prompt_logprobs_last_n",
    ),
    (
        "target logprobs list",
        lambda: t.SampleRequest(prompt=MI, sampling_params=SP, target_prompt_logprobs=[1]),
        "SampleRequest.target_prompt_logprobs",
    ),
    (
        "sampling session without model",
        lambda: t.CreateSamplingSessionRequest(session_id="s", sampling_session_seq_id=0),
        "CreateSamplingSessionRequest.base_model",
    ),
    (
        "sampling session bad path",
        lambda: t.CreateSamplingSessionRequest(
            session_id="s", sampling_session_seq_id=0, model_path="x"
        ),
        "CreateSamplingSessionRequest.model_path",
    ),
    # training
    (
        "loss_fn empty",
        lambda: t.ForwardBackwardInput(data=[DATUM], loss_fn=""),
        "ForwardBackwardInput.loss_fn",
    ),
    (
        "data not datums",
        lambda: t.ForwardBackwardInput(data=[1], loss_fn="ppo"),
        "ForwardBackwardInput.data[0]",
    ),
    (
        "data a datum",
        lambda: t.ForwardBackwardInput(data=DATUM, loss_fn="ppo"),
        "ForwardBackwardInput.data",
    ),
    (
        "config bool",
        lambda: t.ForwardBackwardInput(data=[], loss_fn="ppo", loss_fn_config={"clip": True}),
        "ForwardBackwardInput.loss_fn_config.clip",
    ),
    (
        "config nan",
        lambda: t.ForwardBackwardInput(data=[], loss_fn="ppo", loss_fn_config={"clip": math.nan}),
        "ForwardBackwardInput.loss_fn_config.clip",
    ),
    (
        "fb model_id empty",
        lambda: t.ForwardBackwardRequest(
            forward_backward_input=t.ForwardBackwardInput(data=[], loss_fn="ppo"), model_id=""
        ),
        "ForwardBackwardRequest.model_id",
    ),
    (
        "optim params dict",
        lambda: t.OptimStepRequest(adam_params={}, model_id="m"),
        "OptimStepRequest.adam_params",
    ),
    (
        "optim seq_id neg",
        lambda: t.OptimStepRequest(adam_params=t.AdamParams(), model_id="m", seq_id=-1),
        "OptimStepRequest.seq_id",
    ),
    (
        "optim neither family",
        lambda: t.OptimStepRequest(model_id="m"),
        "OptimStepRequest.adam_params",
    ),
    (
        "optim both families",
        lambda: t.OptimStepRequest(
            adam_params=t.AdamParams(),
            optimizer_params=t.DimuonParams(learning_rate=0.1),
            model_id="m",
        ),
        "OptimStepRequest.adam_params",
    ),
    (
        "optim dimuon as adam",
        lambda: t.OptimStepRequest(adam_params=t.DimuonParams(learning_rate=0.1), model_id="m"),
        "OptimStepRequest.adam_params",
    ),
    ("dimuon lr negative", lambda: t.DimuonParams(learning_rate=-1), "DimuonParams.learning_rate"),
    (
        "dimuon lr nan",
        lambda: t.DimuonParams(learning_rate=math.nan),
        "DimuonParams.learning_rate",
    ),
    ("dimuon beta1 1", lambda: t.DimuonParams(learning_rate=1, beta1=1.0), "DimuonParams.beta1"),
    (
        "dimuon clip bool",
        lambda: t.DimuonParams(learning_rate=1, grad_clip_norm=True),
        "DimuonParams.grad_clip_norm",
    ),
    ("adamw version", lambda: t.OptimizerConfig(version=1), "OptimizerConfig.version"),
    (
        "dimuon version 2",
        lambda: t.OptimizerConfig(type="dimuon", version=2),
        "OptimizerConfig.version",
    ),
    ("optimizer type empty", lambda: t.OptimizerConfig(type=""), "OptimizerConfig.type"),
    # models, sessions
    (
        "create_model seq",
        lambda: t.CreateModelRequest(session_id="s", model_seq_id="0", base_model="b"),
        "CreateModelRequest.model_seq_id",
    ),
    (
        "create_model lora",
        lambda: t.CreateModelRequest(
            session_id="s", model_seq_id=0, base_model="b", lora_config={"rank": 8}
        ),
        "CreateModelRequest.lora_config",
    ),
    (
        "create_session tags",
        lambda: t.CreateSessionRequest(tags="a,b"),
        "CreateSessionRequest.tags",
    ),
    (
        "create_session tag int",
        lambda: t.CreateSessionRequest(tags=[1]),
        "CreateSessionRequest.tags[0]",
    ),
    (
        "heartbeat",
        lambda: t.SessionHeartbeatRequest(session_id=None),
        "SessionHeartbeatRequest.session_id",
    ),
    (
        "finish reason",
        lambda: t.ClientSessionFinishReason(type="done"),
        "ClientSessionFinishReason.type",
    ),
    ("get_info", lambda: t.GetInfoRequest(model_id=3), "GetInfoRequest.model_id"),
    # weights
    (
        "save ttl 0",
        lambda: t.SaveWeightsRequest(model_id="m", ttl_seconds=0),
        "SaveWeightsRequest.ttl_seconds",
    ),
    (
        "save overwrite",
        lambda: t.SaveWeightsRequest(model_id="m", overwrite="yes"),
        "SaveWeightsRequest.overwrite",
    ),
    (
        "save metadata",
        lambda: t.SaveWeightsRequest(model_id="m", user_metadata={"a": 1}),
        "SaveWeightsRequest.user_metadata.a",
    ),
    (
        "load both modes",
        lambda: t.LoadWeightsRequest(
            path="p", optimizer=False, model_id="m", session_id="s", model_seq_id=0
        ),
        "LoadWeightsRequest.session_id",
    ),
    (
        "load no mode",
        lambda: t.LoadWeightsRequest(path="p", optimizer=False),
        "LoadWeightsRequest.model_id",
    ),
    (
        "load via-load no seq",
        lambda: t.LoadWeightsRequest(path="p", optimizer=False, session_id="s"),
        "LoadWeightsRequest.model_seq_id",
    ),
    (
        "load optimizer int",
        lambda: t.LoadWeightsRequest(path="p", optimizer=1, model_id="m"),
        "LoadWeightsRequest.optimizer",
    ),
    (
        "sampler save no target",
        lambda: t.SaveWeightsForSamplerRequest(model_id="m"),
        "SaveWeightsForSamplerRequest.path",
    ),
    (
        "sampler save kind",
        lambda: t.SaveWeightsForSamplerRequest(model_id="m", path="p", kind="live"),
        "SaveWeightsForSamplerRequest.kind",
    ),
    (
        "retrieve empty",
        lambda: t.FutureRetrieveRequest(request_id=""),
        "FutureRetrieveRequest.request_id",
    ),
    (
        "ttl request",
        lambda: t.CheckpointTtlRequest(ttl_seconds=-5),
        "CheckpointTtlRequest.ttl_seconds",
    ),
    # telemetry
    (
        "severity",
        lambda: t.SessionStartEvent(**_event(severity="LOUD")),
        "SessionStartEvent.severity",
    ),
    (
        "timestamp str",
        lambda: t.SessionStartEvent(**_event(timestamp="2024")),
        "SessionStartEvent.timestamp",
    ),
    (
        "events",
        lambda: t.TelemetrySendRequest(
            events=[{}], platform="p", sdk_version="1", session_id="s", process_uuid="u"
        ),
        "TelemetrySendRequest.events[0]",
    ),
    # responses (annotation-derived checks)
    ("response str", lambda: t.CreateModelResponse(model_id=5), "CreateModelResponse.model_id"),
    (
        "response bool",
        lambda: t.TrainingRun(
            training_run_id="r", base_model="b", model_owner="o", is_lora=1, last_request_time=NOW
        ),
        "TrainingRun.is_lora",
    ),
    (
        "response datetime",
        lambda: t.CheckpointArchiveUrlResponse(url="u", expires="soon"),
        "CheckpointArchiveUrlResponse.expires",
    ),
    (
        "response literal",
        lambda: t.SampledSequence(stop_reason="eos", tokens=[]),
        "SampledSequence.stop_reason",
    ),
    (
        "response tokens",
        lambda: t.SampledSequence(stop_reason="stop", tokens=[1, 2.5]),
        "SampledSequence.tokens[]",
    ),
    ("response nested", lambda: t.SampleResponse(sequences=[1]), "SampleResponse.sequences[0]"),
    (
        "response topk",
        lambda: t.SampleResponse(sequences=[], topk_prompt_logprobs=[[(1, "x")]]),
        "SampleResponse.topk_prompt_logprobs[0][0][1]",
    ),
    (
        "response metrics",
        lambda: t.ForwardBackwardOutput(
            loss_fn_output_type="A", loss_fn_outputs=[], metrics={"a": "1"}
        ),
        "ForwardBackwardOutput.metrics.a",
    ),
    ("response cursor", lambda: t.Cursor(offset=0, limit=True, total_count=1), "Cursor.limit"),
    ("health", lambda: t.HealthResponse(status="bad"), "HealthResponse.status"),
]


@pytest.mark.parametrize(
    ("build", "field"), [(b, f) for _, b, f in BAD], ids=[n for n, _, _ in BAD]
)
def test_rejected_with_the_field_named(build: Any, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        build()
    assert info.value.field == field


def test_defaults_and_number_normalisation() -> None:
    assert t.AdamParams() == t.AdamParams(learning_rate=1e-4, beta1=0.9, beta2=0.95, eps=1e-12)
    adam = t.AdamParams(learning_rate=1, weight_decay=0)
    assert type(adam.learning_rate) is float
    assert type(adam.weight_decay) is float
    sp = t.SamplingParams(temperature=1, stop=["a", "b"])
    assert type(sp.temperature) is float
    assert sp.stop == ("a", "b")
    assert t.SamplingParams(stop=[1, 2]).stop == (1, 2)
    assert t.SamplingParams(stop=[]).stop == ()
    assert (sp.top_k, sp.top_p, sp.max_tokens) == (-1, 1.0, None)
    lora = t.LoraConfig(rank=8)
    assert (lora.train_unembed, lora.train_mlp, lora.train_attn, lora.seed) == (
        True,
        True,
        True,
        None,
    )


def test_any_loss_name_passes_through() -> None:
    # The server owns the list of losses; the SDK sends any non-empty name as it is.
    for name in (*get_args(t.LossFnType), "a_future_loss"):
        assert t.ForwardBackwardInput(data=[], loss_fn=name).loss_fn == name  # type: ignore[arg-type]
    for bad in ("", 3, None):
        with pytest.raises(ValidationError) as info:
            t.ForwardBackwardInput(data=[], loss_fn=bad)  # type: ignore[arg-type]
        assert info.value.field == "ForwardBackwardInput.loss_fn"


def test_load_weights_modes() -> None:
    legacy = t.LoadWeightsRequest(
        path="tinker://r/weights/a", optimizer=True, model_id="m", seq_id=1
    )
    assert legacy.derived_model_id is None
    via = t.LoadWeightsRequest(
        path="tinker://r/weights/a", optimizer=False, session_id="s", model_seq_id=3
    )
    assert via.derived_model_id == "s:train:3"


def test_sample_response_with_sequence_ids() -> None:
    response = t.SampleResponse(
        sequences=[
            t.SampledSequence(stop_reason="stop", tokens=[1]),
            t.SampledSequence(stop_reason="length", tokens=[2]),
        ]
    )
    stamped = response.with_sequence_ids(["a", "b"])
    assert [s.sequence_id for s in stamped.sequences] == ["a", "b"]
    assert response.sequences[0].sequence_id is None
    from tinkex_actors.errors import ResponseDecodeError

    with pytest.raises(ResponseDecodeError):
        response.with_sequence_ids(["a"])


@pytest.mark.parametrize(
    ("path", "run", "kind", "checkpoint_id"),
    [
        ("tinker://run-1/weights/step-10", "run-1", "training", "weights/step-10"),
        (
            "tinker://s:train:0/sampler_weights/final",
            "s:train:0",
            "sampler",
            "sampler_weights/final",
        ),
        ("tinker://r/external_weights/x.y", "r", "external", "external_weights/x.y"),
    ],
)
def test_parse_tinker_path(path: str, run: str, kind: str, checkpoint_id: str) -> None:
    parsed = t.ParsedCheckpointTinkerPath.from_tinker_path(path)
    assert (
        parsed.tinker_path,
        parsed.training_run_id,
        parsed.checkpoint_type,
        parsed.checkpoint_id,
    ) == (
        path,
        run,
        kind,
        checkpoint_id,
    )


@pytest.mark.parametrize(
    "path",
    [
        "run/weights/x",
        "http://run/weights/x",
        "tinker://run/weights",
        "tinker://run/weights/x/y",
        "tinker://run/checkpoints/x",
        "tinker:///weights/x",
        "tinker://run/weights/",
        "",
        42,
    ],
)
def test_bad_tinker_paths(path: Any) -> None:
    with pytest.raises(InvalidTinkerPathError) as info:
        t.ParsedCheckpointTinkerPath.from_tinker_path(path)
    assert "tinker://<training_run_id>/<weights|sampler_weights|external_weights>/<name>" in str(
        info.value
    )
    assert isinstance(info.value, ValidationError)


def test_types_public_surface() -> None:
    names = list(t.__all__)
    assert names == sorted(names)
    assert len(names) == len(set(names))
    for name in names:
        assert getattr(t, name) is not None, name
    import attrs

    from tinkex_actors.types import (
        _datum,
        _futures,
        _model_input,
        _rest,
        _sampling,
        _service,
        _telemetry,
        _tensor,
        _training,
        _weights,
    )

    for module in (
        _datum,
        _futures,
        _model_input,
        _rest,
        _sampling,
        _service,
        _telemetry,
        _tensor,
        _training,
        _weights,
    ):
        for name, value in vars(module).items():
            if isinstance(value, type) and attrs.has(value) and value.__module__ == module.__name__:
                assert name in names, (
                    f"{module.__name__}.{name} is not exported from tinkex_actors.types"
                )


def test_optimizer_families() -> None:
    assert t.OptimizerConfig().version is None
    assert t.OptimizerConfig(type="dimuon").version == 1
    assert t.OptimizerConfig(type="lion", version=3).version == 3  # unknown families pass
    dimuon = t.DimuonParams(learning_rate=1, grad_clip_norm=-1)  # <= 0: no clipping
    assert (dimuon.type, dimuon.learning_rate, dimuon.grad_clip_norm, dimuon.beta1) == (
        "dimuon",
        1.0,
        -1.0,
        0.9,
    )
    assert type(dimuon.learning_rate) is float
    step = t.OptimStepRequest.of(dimuon, "m")
    assert step.optimizer_params is dimuon
    assert step.adam_params is None
    assert step.optim_params is dimuon
    adam = t.AdamParams()
    assert t.OptimStepRequest.of(adam, "m").optim_params is adam


def test_numpy_integers_are_stored_as_plain_ints() -> None:
    # Request bodies are encoded by JSON encoders that know only Python numbers.
    request = t.SampleRequest(
        prompt=MI, sampling_params=SP, num_samples=np.int64(2), topk_prompt_logprobs=np.int32(3)
    )
    assert (request.num_samples, request.topk_prompt_logprobs) == (2, 3)
    assert type(request.num_samples) is int
    assert type(request.topk_prompt_logprobs) is int
    saved = t.SaveWeightsRequest(model_id="m", ttl_seconds=np.uint16(60))
    assert type(saved.ttl_seconds) is int
    assert saved == t.SaveWeightsRequest(model_id="m", ttl_seconds=60)
    # The sampling flow encodes with plain orjson (no numpy support).
    assert orjson.loads(orjson.dumps(to_jsonable(request)))["num_samples"] == 2
    with pytest.raises(ValidationError) as info:
        t.SampleRequest(prompt=MI, sampling_params=SP, num_samples=np.int64(0))
    assert info.value.field == "SampleRequest.num_samples"
