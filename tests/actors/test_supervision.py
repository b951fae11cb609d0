"""Supervision: let-it-crash, restart on the same model with seq_ids continuing, intensity."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import orjson
import pytest

from tinkex_actors import Config, ServiceClient, telemetry, types
from tinkex_actors.actors import CHILD_FAILED, CHILD_RESTARTED
from tinkex_actors.errors import ActorCrashedError, ChildFailedError
from tinkex_actors.transport import RawResponse

from ._backends import Recorder, forward_request
from .conftest import BASE_MODEL, datum


class BoomError(Exception):
    """An unexpected, non-Tinkex error (a bug in a backend, say)."""


class CrashOn:
    """Raises :class:`BoomError` on the next ``times`` requests to paths ending with ``suffix``."""

    def __init__(self, suffix: str, times: int = 0) -> None:
        self.suffix = suffix
        self.times = times
        self.lock = threading.Lock()

    def __call__(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes | None
    ) -> RawResponse | None:
        if not path.endswith(self.suffix):
            return None
        with self.lock:
            if self.times <= 0:
                return None
            self.times -= 1
        raise BoomError(f"injected failure on {path}")


@pytest.fixture
def events() -> Any:
    seen: list[tuple[tuple[str, ...], dict[str, Any]]] = []
    telemetry.attach(
        "test-supervision",
        [CHILD_RESTARTED, CHILD_FAILED],
        lambda event, m, meta, c: seen.append((event, dict(meta))),
    )
    yield seen
    telemetry.detach("test-supervision")


def test_crash_restarts_the_actor_on_the_same_model(config: Config, events: Any) -> None:
    fault = CrashOn("/forward_backward")
    recorder = Recorder(config, fault=fault)
    with ServiceClient(config, backend=recorder) as service:
        training = service.create_lora_training_client(BASE_MODEL, timeout=30)
        batch = [datum([1, 2, 3, 4, 5])]
        first = training.forward_backward(batch, "cross_entropy").result(timeout=30)
        fault.times = 1
        crashed = training.forward_backward(batch, "cross_entropy")
        # Queued behind the crashing call: runs on the replacement, never lost.
        queued = training.optim_step(types.AdamParams(learning_rate=1e-3))
        error = crashed.exception(timeout=30)
        assert isinstance(error, ActorCrashedError)
        assert isinstance(error.__cause__, BoomError)
        assert queued.result(timeout=30) is not None
        # The replacement continues the same model and the seq_id sequence without a gap.
        after = training.forward_backward(batch, "cross_entropy").result(timeout=30)
        assert after.metrics["loss:sum"] < first.metrics["loss:sum"]  # the step applied
        sent = recorder.sent("/forward_backward")
        seqs = [forward_request(e).seq_id for e in sent if e is not sent[1]]
        optim = [orjson.loads(e.body or b"")["seq_id"] for e in recorder.sent("/optim_step")]
        assert seqs == [1, 3]
        assert optim == [2]
        assert {forward_request(e).model_id for e in sent} == {training.model_id}
        assert training._handle.generation == 2
    assert [e for e, _ in events] == [CHILD_RESTARTED]
    assert events[0][1]["client"] == "training"
    assert events[0][1]["kind"] == "BoomError"


def test_too_many_crashes_fail_the_client(config: Config, events: Any) -> None:
    fault = CrashOn("/forward_backward")
    recorder = Recorder(config, fault=fault)
    with ServiceClient(config, backend=recorder, max_restarts=2, restart_period=60) as service:
        training = service.create_lora_training_client(BASE_MODEL, timeout=30)
        other = service.create_lora_training_client(BASE_MODEL, timeout=30)
        fault.times = 3
        batch = [datum([1, 2, 3])]
        for _ in range(3):
            assert isinstance(
                training.forward_backward(batch, "cross_entropy").exception(timeout=30),
                ActorCrashedError,
            )
        # A call racing the supervisor's decision fails with it (never hangs, never runs).
        try:
            racing = training.forward_backward(batch, "cross_entropy").exception(timeout=30)
        except ChildFailedError as raised:  # the decision came first
            racing = raised
        assert isinstance(racing, ChildFailedError)
        # Once failed for good, calls raise at once, with the cause kept.
        with pytest.raises(ChildFailedError) as info:
            training.forward_backward(batch, "cross_entropy")
        assert isinstance(info.value.__cause__, BoomError)
        with pytest.raises(ChildFailedError):
            training.optim_step(types.AdamParams())
        # one_for_one: the sibling is untouched.
        assert other.forward_backward(batch, "cross_entropy").result(timeout=30).loss_fn_outputs
    assert [e for e, _ in events] == [CHILD_RESTARTED, CHILD_RESTARTED, CHILD_FAILED]


def test_unexpected_error_in_a_worker_escalates(config: Config, events: Any) -> None:
    fault = CrashOn("/retrieve_future")
    recorder = Recorder(config, fault=fault)
    with ServiceClient(config, backend=recorder) as service:
        sampler = service.create_sampling_client(base_model=BASE_MODEL, timeout=30)
        prompt = types.ModelInput.from_ints([1, 2, 3])
        params = types.SamplingParams(max_tokens=2)
        fault.times = 1
        error = sampler.sample(prompt, params).exception(timeout=30)
        assert isinstance(error, ActorCrashedError)
        assert isinstance(error.__cause__, BoomError)
        # The sampling actor was restarted; sampling goes on.
        assert sampler.sample(prompt, params).result(timeout=30).sequences
        training = service.create_lora_training_client(BASE_MODEL, timeout=30)
        fault.times = 1
        failed = training.forward([datum([1, 2, 3])], "cross_entropy").exception(timeout=30)
        assert isinstance(failed, ActorCrashedError)
        assert training.forward([datum([1, 2, 3])], "cross_entropy").result(timeout=30).metrics
    assert [meta["client"] for _, meta in events] == ["sampling", "training"]
