"""TrainingClient against the null server: calls, chunking, seq_ids, checkpoints, bad input."""

from __future__ import annotations

import math
from collections.abc import Callable

import orjson
import pytest
from _servers import ServerHandle

from tinkex_actors import ActorFuture, Config, ServiceClient, TrainingClient, types
from tinkex_actors.errors import (
    ClientClosedError,
    InvalidTinkerPathError,
    RequestFailedError,
    TinkexError,
    TinkexTimeoutError,
    ValidationError,
)

from ._backends import Recorder, forward_request
from .conftest import BASE_MODEL, datum


def test_forward_backward_then_optim_step(training: TrainingClient) -> None:
    batch = [datum(list(range(1, 17)))]
    fb = training.forward_backward(batch, "cross_entropy")
    step = training.optim_step(types.AdamParams(learning_rate=1e-3))
    assert isinstance(fb, ActorFuture)
    out = fb.result(timeout=30)
    assert len(out.loss_fn_outputs) == 1
    assert len(out.loss_fn_outputs[0]["logprobs"].to_list()) == 15
    assert out.metrics["loss:sum"] > 0
    assert step.result(timeout=30).metrics is not None
    # The loss falls after a step (the null engine's adapter trains).
    again = training.forward_backward(batch, "cross_entropy").result(timeout=30)
    assert again.metrics["loss:sum"] < out.metrics["loss:sum"]


def test_forward_has_no_gradient_effect(training: TrainingClient) -> None:
    batch = [datum([5, 6, 7, 8, 9])]
    first = training.forward(batch, "cross_entropy").result(timeout=30)
    training.optim_step(types.AdamParams(learning_rate=1e-2)).result(timeout=30)
    second = training.forward(batch, "cross_entropy").result(timeout=30)
    # No gradient was accumulated by forward, so the step had nothing to apply.
    assert second.metrics["loss:sum"] == pytest.approx(first.metrics["loss:sum"])


def test_get_info_is_cached_and_names_the_model(training: TrainingClient) -> None:
    info = training.get_info()
    assert info.model_id == training.model_id
    assert training.base_model == BASE_MODEL
    assert training.get_info_async().done()
    assert ":train:" in training.model_id


def test_chunks_follow_the_server_limits_and_keep_order(null_server: ServerHandle) -> None:
    # The shared null server announces fwdbwd_max_chunk_len=2 and zstd bodies.
    config = Config(api_key=null_server.api_key, base_url=null_server.base_url)
    recorder = Recorder(config)
    with ServiceClient(config, backend=recorder) as service:
        training = service.create_lora_training_client(BASE_MODEL, timeout=30)
        lengths = [3, 4, 5, 6, 7]  # distinct lengths identify each datum's output
        batch = [datum(list(range(10, 10 + n + 1))) for n in lengths]
        out = training.forward_backward(batch, "cross_entropy").result(timeout=30)
        step = training.optim_step(types.AdamParams()).result(timeout=30)
        assert step is not None
        sent = recorder.sent("/forward_backward")
        assert [e.headers.get("Content-Encoding") for e in sent] == ["zstd"] * 3
        requests = [forward_request(e) for e in sent]
        assert [r.seq_id for r in requests] == [1, 2, 3]
        assert [len(r.forward_backward_input.data) for r in requests] == [2, 2, 1]
        assert all(r.model_id == training.model_id for r in requests)
        # The optim_step took the next seq_id.
        optim = recorder.sent("/optim_step")
        assert [orjson.loads(e.body or b"")["seq_id"] for e in optim] == [4]
        # Outputs combined in order; loss:sum reduced over the chunks.
        assert [len(o["logprobs"].to_list()) for o in out.loss_fn_outputs] == lengths
        assert out.metrics["loss:sum"] > 0
        singles = [
            training.forward([d], "cross_entropy").result(timeout=30).metrics["loss:sum"]
            for d in batch
        ]
        together = training.forward(batch, "cross_entropy").result(timeout=30)
        assert together.metrics["loss:sum"] == pytest.approx(math.fsum(singles))


def test_config_chunk_limits_apply_when_the_server_announces_none(
    slow_server: ServerHandle,
) -> None:
    # The slow server announces no chunk limits: Config.max_chunk_datums/tokens apply.
    config = Config(
        api_key=slow_server.api_key,
        base_url=slow_server.base_url,
        max_chunk_datums=3,
        max_chunk_tokens=19,
    )
    recorder = Recorder(config)
    with ServiceClient(config, backend=recorder) as service:
        training = service.create_lora_training_client(BASE_MODEL, timeout=30)
        # 5 datums of 4 tokens, 1 of 12: [4,4,4] | [4,4] (4+4+12 > 19) | [12]
        batch = [datum(list(range(1, 6))) for _ in range(5)] + [datum(list(range(1, 14)))]
        out = training.forward(batch, "cross_entropy").result(timeout=30)
        requests = [forward_request(e) for e in recorder.sent("/forward_backward")]
        assert [len(r.forward_backward_input.data) for r in requests] == [3, 2, 1]
        assert [r.seq_id for r in requests] == [1, 2, 3]
        assert all(
            e.headers.get("Content-Encoding") is None for e in recorder.sent("/forward_backward")
        )
        assert [len(o["logprobs"].to_list()) for o in out.loss_fn_outputs] == [4] * 5 + [12]


def test_checkpoints_round_trip(service: ServiceClient, training: TrainingClient) -> None:
    batch = [datum(list(range(1, 12)))]
    training.forward_backward(batch, "cross_entropy")
    training.optim_step(types.AdamParams(learning_rate=1e-3))
    saved = training.save_state("ckpt-a").result(timeout=30)
    assert saved.path.endswith("/weights/ckpt-a")
    before = training.forward(batch, "cross_entropy").result(timeout=30).metrics["loss:sum"]
    sampler = training.save_weights_for_sampler("snap-a").result(timeout=30)
    assert sampler.path is not None
    assert sampler.path.endswith("/sampler_weights/snap-a")
    # Train further, then load the checkpoint back: the loss returns to its value.
    training.forward_backward(batch, "cross_entropy")
    training.optim_step(types.AdamParams(learning_rate=1e-2)).result(timeout=30)
    moved = training.forward(batch, "cross_entropy").result(timeout=30).metrics["loss:sum"]
    assert moved != pytest.approx(before)
    training.load_state_with_optimizer(saved.path).result(timeout=30)
    back = training.forward(batch, "cross_entropy").result(timeout=30).metrics["loss:sum"]
    assert back == pytest.approx(before)
    training.load_state(saved.path).result(timeout=30)
    # A new model from the checkpoint: create-via-load, id "<session>:train:<n>".
    restored = service.create_training_client_from_state(saved.path, timeout=30)
    assert restored.model_id.startswith(f"{service.session_id}:train:")
    assert restored.model_id != training.model_id
    again = restored.forward(batch, "cross_entropy").result(timeout=30).metrics["loss:sum"]
    assert again == pytest.approx(before)
    with_opt = service.create_training_client_from_state_with_optimizer(saved.path, timeout=30)
    assert with_opt.get_info().model_id == with_opt.model_id
    assert with_opt.unload_model().result(timeout=30).model_id == with_opt.model_id


def test_sampling_clients_from_training(training: TrainingClient) -> None:
    training.forward_backward([datum(list(range(1, 9)))], "cross_entropy")
    training.optim_step(types.AdamParams())
    unnamed = training.save_weights_and_get_sampling_client(timeout=30)
    assert unnamed.base_model == BASE_MODEL
    named = training.save_weights_and_get_sampling_client("named-snap", timeout=30)
    assert named.model_path is not None
    assert named.model_path.endswith("/named-snap")
    from_path = training.create_sampling_client(named.model_path, timeout=30)
    prompt = types.ModelInput.from_ints([1, 2, 3])
    params = types.SamplingParams(max_tokens=4, seed=7, temperature=0.5)
    results = [c.sample(prompt, params).result(timeout=30) for c in (unnamed, named, from_path)]
    # Same weights, same seed: the same tokens.
    assert results[1].sequences[0].tokens == results[2].sequences[0].tokens
    assert all(len(r.sequences[0].tokens) == 4 for r in results)


def test_bad_input_is_rejected_before_sending(null_server: ServerHandle) -> None:
    config = Config(api_key=null_server.api_key, base_url=null_server.base_url)
    recorder = Recorder(config)
    with ServiceClient(config, backend=recorder) as service:
        training = service.create_lora_training_client(BASE_MODEL, timeout=30)
        good = datum([1, 2, 3, 4])
        count = len(recorder.events)
        bad_calls: list[tuple[Callable[[], object], str | None]] = [
            (lambda: training.forward_backward([], "cross_entropy"), "data"),
            (lambda: training.forward_backward(good, "cross_entropy"), "data"),  # type: ignore[arg-type]
            (lambda: training.forward_backward([good, "x"], "cross_entropy"), "data[1]"),  # type: ignore[list-item]
            # Any non-empty loss name is sent (the server owns the list); an empty one is not.
            (lambda: training.forward_backward([good], ""), "loss_fn"),
            (lambda: training.forward_backward([good], 3), "loss_fn"),  # type: ignore[arg-type]
            (
                lambda: training.forward_backward(
                    [types.Datum(types.ModelInput.from_ints([1, 2, 3]), {"target_tokens": [1, 2]})],
                    "cross_entropy",
                ),
                "data[0].loss_fn_inputs.target_tokens",
            ),
            (
                lambda: training.forward_backward(
                    [types.Datum(types.ModelInput.from_ints([]), {})], "cross_entropy"
                ),
                "data[0].model_input",
            ),
            (lambda: training.optim_step("fast"), "optim_params"),  # type: ignore[arg-type]
            (lambda: training.optim_step({"learning_rate": -1.0}), None),  # type: ignore[arg-type]
            (lambda: training.save_state(""), "name"),
            (lambda: training.save_state("a", ttl_seconds=0), "ttl_seconds"),
            (lambda: training.save_state("a", overwrite="yes"), "overwrite"),  # type: ignore[arg-type]
            (lambda: training.save_state("a", user_metadata={"k": 1}), "user_metadata.k"),  # type: ignore[dict-item]
            (
                lambda: training.save_weights_for_sampler("a", sampling_session_seq_id=-1),
                "sampling_session_seq_id",
            ),
            (lambda: training.load_state("weights/x"), "path"),
            (lambda: training.save_weights_for_sampler("a/b"), "name"),
            (lambda: training.create_sampling_client_async("not-a-path"), "model_path"),
        ]
        for call, field in bad_calls:
            with pytest.raises(ValidationError) as info:
                call()
            if field is not None:
                assert info.value.field == field, (field, info.value)
        # Datum itself rejects mismatched target/weight lengths at construction.
        with pytest.raises(ValidationError):
            types.Datum(
                types.ModelInput.from_ints([1, 2, 3]),
                {"target_tokens": [1, 2, 3], "weights": [1.0]},
            )
        with pytest.raises(InvalidTinkerPathError):
            service.create_training_client_from_state("x/y")  # not a tinker:// path at all
        assert len(recorder.events) == count, "bad input must not reach the server"
        # The client still works.
        assert training.forward([good], "cross_entropy").result(timeout=30).loss_fn_outputs


def test_server_rejection_is_a_typed_error_and_the_client_continues(
    training: TrainingClient,
) -> None:
    # Token ids beyond the vocabulary pass the client (it does not know the vocabulary).
    failing = training.forward_backward([datum([1, 2, 10_000_000])], "cross_entropy")
    error = failing.exception(timeout=30)
    assert isinstance(error, TinkexError)
    assert not isinstance(error, RequestFailedError) or error.category.value == "user"
    # The rejected call used up its seq_id (the server counts it): the next one runs at once.
    out = training.forward_backward([datum([1, 2, 3])], "cross_entropy").result(timeout=30)
    assert out.loss_fn_outputs


def test_result_timeout_raises_and_leaves_the_client_usable(
    slow_server: ServerHandle,
) -> None:
    config = Config(api_key=slow_server.api_key, base_url=slow_server.base_url)
    with ServiceClient(config) as service:
        training = service.create_lora_training_client(BASE_MODEL, timeout=30)
        future = training.forward_backward([datum([1, 2, 3, 4])], "cross_entropy")
        with pytest.raises(TinkexTimeoutError):
            future.result(timeout=0.001)
        with pytest.raises(TimeoutError):  # the builtin catches it too
            future.result(timeout=0.001)
        assert future.result(timeout=30).loss_fn_outputs
        assert training.optim_step(types.AdamParams()).result(timeout=30) is not None


def test_calls_on_a_closed_client_raise_at_once(service: ServiceClient) -> None:
    training = service.create_lora_training_client(BASE_MODEL, timeout=30)
    training.close()
    training.close()  # idempotent
    assert training.closed
    with pytest.raises(ClientClosedError):
        training.forward_backward([datum([1, 2, 3])], "cross_entropy")
    with pytest.raises(ClientClosedError):
        training.optim_step(types.AdamParams())
    # The service is unaffected.
    other = service.create_lora_training_client(BASE_MODEL, timeout=30)
    assert other.forward([datum([1, 2, 3])], "cross_entropy").result(timeout=30).metrics
