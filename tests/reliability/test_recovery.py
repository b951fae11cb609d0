"""Session recovery against a real server: expired sessions, killed and wiped servers.

A private null server (with the test hooks) is expired, restarted gracefully, killed
(SIGKILL: live models lost, data kept) and wiped (SIGKILL and an empty data directory) under
ServiceClients with each recovery policy. What must hold:

* a 410 on the heartbeat (the ``_test/expire_session`` hook) makes the ServiceClient create a
  new session once, however many triggers race: sampling clients are re-created in it and
  keep sampling, samples in flight complete;
* a model that survived a graceful restart continues with the same model id;
* with ``RecoveryPolicy()`` a lost model is restored from the client's last ``save_state``
  (else as it was created): calls that met the loss fail with ``ModelLostError``
  (``restoring=True``) until ``resume()``, which reports the step to continue from; then the
  losses and logprobs equal a run without the loss;
* without model restores (the default) or without recovery at all, every call that meets
  lost state raises its typed error (``ModelLostError``, ``SamplerLostError``,
  ``SessionLostError``) within its bound;
* every step is a telemetry event and a log line naming the session and model or sampler.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from _servers import ServerHandle, start_server

from tinkex_actors import Config, RecoveryPolicy, ServiceClient, telemetry, types
from tinkex_actors.errors import (
    ModelLostError,
    SamplerLostError,
    SessionLostError,
    TinkexError,
    ValidationError,
)

from ._training import ADAM, LORA, MODEL, WAIT, batch, train

pytestmark = pytest.mark.slow

PROMPT = types.ModelInput.from_ints([5, 6, 7, 8])
PARAMS = types.SamplingParams(max_tokens=6, seed=3)
#: Back-off sleeps capped at 1 s: the transport's retries then span the server's restart.
MAX_SLEEP = 1.0


def capped_sleep(seconds: float) -> None:
    time.sleep(min(seconds, MAX_SLEEP))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    root = tmp_path_factory.mktemp("recovery")
    handle = start_server(
        engine="null",
        data_dir=root / "data",
        extra_args=("--test-hooks", "--poll-hold-seconds=2"),
    )
    yield handle
    handle.stop()


def config_of(server: ServerHandle) -> Config:
    return Config(api_key=server.api_key, base_url=server.base_url, heartbeat_interval=0.2)


class Events:
    """Recovery telemetry events of the test, in order: ``(name, metadata)``."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def __call__(self, event: Any, measurements: Any, metadata: Any, config: Any) -> None:
        with self.lock:
            self.seen.append((".".join(event[2:]), dict(metadata)))

    def names(self) -> list[str]:
        with self.lock:
            return [name for name, _ in self.seen]

    def of(self, name: str) -> list[dict[str, Any]]:
        with self.lock:
            return [meta for seen, meta in self.seen if seen == name]

    def wait_for(self, name: str, count: int = 1) -> list[dict[str, Any]]:
        wait_until(lambda: len(self.of(name)) >= count, f"{count} {name} event(s)")
        return self.of(name)


@pytest.fixture
def events() -> Iterator[Events]:
    seen = Events()
    telemetry.attach("test-recovery", list(telemetry.RECOVERY_EVENTS), seen)
    yield seen
    telemetry.detach("test-recovery")


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def expire(server: ServerHandle, session_id: str) -> None:
    reply = requests.post(
        f"{server.base_url}/api/v1/_test/expire_session",
        data=orjson.dumps({"session_id": session_id}),
        headers=server.headers(**{"Content-Type": "application/json"}),
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["expired"] is True


def kill_and_restart(server: ServerHandle) -> None:
    process = server.process
    assert process is not None
    process.kill()
    process.wait(WAIT)
    server.restart()


def wipe_and_restart(server: ServerHandle) -> None:
    process = server.process
    assert process is not None
    process.kill()
    process.wait(WAIT)
    server.stop()
    shutil.rmtree(server.data_dir)
    server.data_dir.mkdir()
    server.start()


def reference_run(server: ServerHandle, steps: int) -> tuple[list[float], list[list[float]]]:
    """Losses of ``steps`` uninterrupted steps and the logprobs of a probe afterwards."""
    with ServiceClient(config_of(server)) as service:
        training = service.create_lora_training_client(MODEL, LORA, timeout=WAIT)
        losses = train(training, range(steps))
        return losses, probe(training)


def probe(training: Any) -> list[list[float]]:
    output = training.forward(batch(999), "cross_entropy").result(WAIT)
    return [item["logprobs"].to_list() for item in output.loss_fn_outputs]


def bounded(call: Callable[[], Any]) -> tuple[Any, BaseException | None, float]:
    """Run ``call``; (result, exception, seconds)."""
    started = time.monotonic()
    try:
        return call(), None, time.monotonic() - started
    except TinkexError as exc:
        return None, exc, time.monotonic() - started


# ---------------------------------------------------------------------------- policies
def test_recovery_policy_is_validated_and_backs_off() -> None:
    policy = RecoveryPolicy(backoff=0.5, max_backoff=3.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert RecoveryPolicy.off() == RecoveryPolicy(sessions=False, restore_models=False)
    for bad in (
        {"max_attempts": 0},
        {"max_attempts": 1.5},
        {"backoff": -1},
        {"restore_timeout": 0},
        {"sessions": "yes"},
        {"sessions": False},  # restoring models needs session recovery
    ):
        with pytest.raises(ValidationError) as info:
            RecoveryPolicy(**bad)
        assert info.value.field in (*bad, "restore_models")
    with pytest.raises(ValidationError) as info:
        ServiceClient(api_key="tml-unit-test-key", recovery="on")  # type: ignore[arg-type]
    assert info.value.field == "recovery"


# ---------------------------------------------------------------------------- sessions
def test_a_410_on_the_heartbeat_replaces_the_session_and_rebinds_the_samplers(
    server: ServerHandle, events: Events, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tinkex_actors")
    with ServiceClient(config_of(server)) as service:  # the default: sessions only
        assert service.recovery == RecoveryPolicy(restore_models=False)
        old = service.session_id
        training = service.create_lora_training_client(MODEL, LORA, timeout=WAIT)
        train(training, range(2))
        checkpoint = training.save_state("two").result(WAIT).path
        assert training.last_checkpoint == checkpoint
        sampler = service.create_sampling_client(base_model=MODEL, timeout=WAIT)
        old_sampler = sampler.sampler_id
        in_flight = [sampler.sample(PROMPT, PARAMS) for _ in range(50)]

        expire(server, old)  # the heartbeat (every 0.2 s) gets 410 next
        wait_until(lambda: service.session_id != old, "a new session")
        new = service.session_id
        rebound = events.wait_for("sampler.rebound")
        for future in in_flight:
            assert future.result(WAIT).sequences
        assert sampler.sampler_id == rebound[0]["sampler_id"] != old_sampler
        assert sampler.sampler_id.startswith(f"{new}:sample:")
        assert rebound[0]["previous_sampler_id"] == old_sampler
        assert sampler.sample(PROMPT, PARAMS).result(WAIT).sequences

        # The heartbeat found it: the loss names the server's 410 (the session expired).
        (lost,) = events.of("session.lost")
        assert lost["session_id"] == old
        assert "expired" in lost["reason"]
        (recovered,) = events.of("session.recovered")
        assert recovered["previous_session_id"] == old
        assert recovered["session_id"] == new
        # The heartbeat beats for the new session.
        beats = service._tree.heartbeat.beats
        wait_until(lambda: service._tree.heartbeat.beats > beats + 2, "heartbeats")
        assert service._tree.heartbeat.session_id == new

        # Models are not restored by default: the training client is dead, and says why.
        with pytest.raises(ModelLostError) as info:
            training.forward_backward(batch(2), "cross_entropy").result(WAIT)
        error = info.value
        assert not error.restoring
        assert error.checkpoint == checkpoint
        assert error.optim_steps == 2
        assert error.model_id == training.model_id
        assert "create_training_client_from_state_with_optimizer" in str(error)
        with pytest.raises(ModelLostError):
            training.optim_step(ADAM).result(WAIT)
        with pytest.raises(ModelLostError):
            training.resume(timeout=WAIT)
        # New clients live in the new session; the checkpoint carries the run on.
        resumed = service.create_training_client_from_state_with_optimizer(checkpoint, timeout=WAIT)
        assert resumed.model_id.startswith(f"{new}:train:")
        train(resumed, range(2, 3))
    assert events.names() == [
        "session.lost",
        "session.recovered",
        "model.lost",
        "sampler.rebound",
    ]
    (model_lost,) = events.of("model.lost")
    assert model_lost["kind"] == "session"
    assert model_lost["restoring"] is False
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for line in (
        "tinkex.recovery.session_lost",
        "tinkex.recovery.session_recovered",
        "tinkex.recovery.model_lost",
        "tinkex.recovery.sampler_rebound",
    ):
        assert line in logged
    assert new in logged
    assert old_sampler in logged


def test_a_restored_model_trains_on_exactly_after_resume(
    server: ServerHandle, events: Events
) -> None:
    reference, reference_probe = reference_run(server, 8)
    with ServiceClient(config_of(server), recovery=RecoveryPolicy()) as service:
        old = service.session_id
        training = service.create_lora_training_client(MODEL, LORA, timeout=WAIT)
        old_model = training.model_id
        assert train(training, range(4)) == reference[:4]
        checkpoint = training.save_state("four").result(WAIT).path
        train(training, range(4, 6))  # lost with the session
        expire(server, old)
        restored_event = events.wait_for("model.restored")[0]

        # Restored, but fenced: calls fail until resume(), so none runs on the wrong state.
        with pytest.raises(ModelLostError) as info:
            training.forward_backward(batch(6), "cross_entropy").result(WAIT)
        assert info.value.restoring
        assert info.value.checkpoint == checkpoint
        assert info.value.optim_steps == 4
        restored = training.resume(timeout=WAIT)
        assert restored is not None
        assert restored.checkpoint == checkpoint
        assert restored.optim_steps == 4
        assert restored.optimizer
        assert restored.previous_model_id == old_model
        assert training.model_id == restored.model_id == restored_event["model_id"]
        assert training.model_id.startswith(f"{service.session_id}:train:")
        assert training.resume(timeout=WAIT) is None  # nothing more to resume
        # From step 4 again: every loss equals the uninterrupted run's (seq_ids start at 1).
        assert train(training, range(restored.optim_steps, 8)) == reference[4:]
        assert probe(training) == reference_probe
    assert events.names() == [
        "session.lost",
        "session.recovered",
        "model.lost",
        "model.restored",
    ]


def test_calls_find_the_expired_session_when_the_heartbeat_has_not_yet(
    server: ServerHandle, events: Events
) -> None:
    reference, _ = reference_run(server, 4)
    quiet = config_of(server).with_(heartbeat_interval=600.0)  # no heartbeat in this test
    with ServiceClient(quiet, recovery=RecoveryPolicy()) as service:
        old = service.session_id
        training = service.create_lora_training_client(MODEL, LORA, timeout=WAIT)
        train(training, range(2))
        training.save_state("two").result(WAIT)
        expire(server, old)
        # A creation naming the expired session gets 410: it waits for the new session and
        # is created in it.
        sampler = service.create_sampling_client(base_model=MODEL, timeout=WAIT)
        new = service.session_id
        assert new != old
        assert sampler.sampler_id.startswith(f"{new}:sample:")
        assert sampler.sample(PROMPT, PARAMS).result(WAIT).sequences
        # The training client was fenced with its session and restored in the new one.
        with pytest.raises(ModelLostError):
            train(training, range(2, 3))
        restored = training.resume(timeout=WAIT)
        assert restored is not None
        assert restored.optim_steps == 2
        assert train(training, range(2, 4)) == reference[2:]
    (lost,) = events.of("session.lost")
    assert "expired" in lost["reason"]
    assert len(events.of("session.recovered")) == 1


def test_a_training_call_finds_a_released_model(server: ServerHandle, events: Events) -> None:
    quiet = config_of(server).with_(heartbeat_interval=600.0)
    with ServiceClient(quiet, recovery=RecoveryPolicy()) as service:
        old = service.session_id
        training = service.create_lora_training_client(MODEL, LORA, timeout=WAIT)
        train(training, range(1))
        expire(server, old)
        with pytest.raises(ModelLostError) as info:  # 410: released with its session
            train(training, range(1, 2))
        assert info.value.restoring
        assert info.value.checkpoint is None  # never saved: re-created as it was created
        restored = training.resume(timeout=WAIT)
        assert restored is not None
        assert restored.checkpoint is None
        assert service.session_id != old  # the restore found the session gone first
        train(training, range(2))
    (model_lost,) = events.of("model.lost")
    assert model_lost["kind"] == "lost"
    assert "released" in model_lost["reason"]
    assert events.names().count("session.recovered") == 1


def test_a_model_that_survived_a_graceful_restart_continues_with_its_id(
    server: ServerHandle, events: Events
) -> None:
    reference, _ = reference_run(server, 6)
    with ServiceClient(config_of(server), sleep=capped_sleep) as service:
        session = service.session_id
        training = service.create_lora_training_client(MODEL, LORA, timeout=WAIT)
        model = training.model_id
        before = train(training, range(3))
        assert server.restart() == 0  # graceful: the live model is saved
        after = train(training, range(3, 6))
        assert before + after == reference
        assert training.model_id == model
        assert service.session_id == session
        assert training.resume() is None
    assert events.names() == []


def test_a_killed_server_loses_the_model_which_is_restored_from_its_checkpoint(
    server: ServerHandle, events: Events
) -> None:
    reference, reference_probe = reference_run(server, 6)
    with ServiceClient(config_of(server), recovery=RecoveryPolicy(), sleep=capped_sleep) as service:
        session = service.session_id
        training = service.create_lora_training_client(MODEL, LORA, timeout=WAIT)
        train(training, range(3))
        checkpoint = training.save_state("three").result(WAIT).path
        named = training.save_weights_for_sampler("three-sampler").result(WAIT).path
        from_path = service.create_sampling_client(model_path=named, timeout=WAIT)
        snapshot = training.save_weights_and_get_sampling_client(timeout=WAIT)
        base = service.create_sampling_client(base_model=MODEL, timeout=WAIT)
        # A second client continues from the checkpoint and never saves: its restore
        # starts from the checkpoint it was created from.
        loaded = service.create_training_client_from_state_with_optimizer(checkpoint, timeout=WAIT)
        assert loaded.last_checkpoint == checkpoint
        assert train(loaded, range(3, 4)) == reference[3:4]
        train(training, range(3, 5))
        in_flight = [base.sample(PROMPT, PARAMS) for _ in range(40)]

        kill_and_restart(server)
        # The session survived: only the model is lost (the next call finds out).
        with pytest.raises(ModelLostError) as info:
            train(training, range(5, 6))
        assert info.value.restoring
        assert info.value.checkpoint == checkpoint
        restored = training.resume(timeout=WAIT)
        assert restored is not None
        assert restored.optim_steps == 3
        assert train(training, range(3, 6)) == reference[3:]
        assert probe(training) == reference_probe
        assert service.session_id == session
        with pytest.raises(ModelLostError):
            train(loaded, range(4, 5))
        again = loaded.resume(timeout=WAIT)
        assert again is not None
        assert again.checkpoint == checkpoint
        assert again.optim_steps == 0  # counted from the client's creation
        assert again.optimizer
        assert train(loaded, range(3, 6)) == reference[3:]

        for future in in_flight:  # their futures died with the server: sent again
            assert future.result(WAIT).sequences
        assert base.sample(PROMPT, PARAMS).result(WAIT).sequences
        assert from_path.sample(PROMPT, PARAMS).result(WAIT).sequences  # rebuilt from path
        # A snapshot of the live adapter cannot be rebuilt: typed, and it stays so.
        for _ in range(2):
            with pytest.raises(SamplerLostError) as lost:
                snapshot.sample(PROMPT, PARAMS).result(WAIT)
            assert lost.value.sampler_id == snapshot.sampler_id
    assert events.names().count("model.restored") == 2
    assert "session.lost" not in events.names()
    (failed,) = events.of("sampler.failed")
    assert failed["sampler_id"] == snapshot.sampler_id


def test_a_server_that_lost_its_data_gets_a_new_session_and_models_from_scratch(
    server: ServerHandle, events: Events
) -> None:
    reference, reference_probe = reference_run(server, 5)
    with ServiceClient(config_of(server), recovery=RecoveryPolicy(), sleep=capped_sleep) as service:
        old = service.session_id
        training = service.create_lora_training_client(MODEL, LORA, timeout=WAIT)
        train(training, range(2))
        training.save_state("two").result(WAIT)
        named = training.save_weights_for_sampler("two-sampler").result(WAIT).path
        from_path = service.create_sampling_client(model_path=named, timeout=WAIT)
        base = service.create_sampling_client(base_model=MODEL, timeout=WAIT)
        in_flight = [base.sample(PROMPT, PARAMS) for _ in range(40)]

        wipe_and_restart(server)  # sessions, models, checkpoints: all gone
        wait_until(lambda: service.session_id != old, "a new session")
        with pytest.raises(ModelLostError) as info:
            train(training, range(2, 3))
        assert info.value.restoring
        restored = training.resume(timeout=WAIT)
        # The checkpoint went with the data: the model is re-created as it was created.
        assert restored is not None
        assert restored.checkpoint is None
        assert restored.optim_steps == 0
        assert train(training, range(5)) == reference  # seeded: exactly the same run
        assert probe(training) == reference_probe

        for future in in_flight:
            assert future.result(WAIT).sequences
        assert base.sample(PROMPT, PARAMS).result(WAIT).sequences
        assert base.sampler_id.startswith(f"{service.session_id}:sample:")
        with pytest.raises(SamplerLostError):  # its weights are gone
            from_path.sample(PROMPT, PARAMS).result(WAIT)
    assert events.of("session.recovered")[0]["previous_session_id"] == old
    assert len(events.of("session.recovered")) == 1
    (restored_event,) = events.of("model.restored")
    assert restored_event["checkpoint"] is None


def test_concurrent_triggers_recover_once(server: ServerHandle, events: Events) -> None:
    with ServiceClient(config_of(server), recovery=RecoveryPolicy(), sleep=capped_sleep) as service:
        old = service.session_id
        trainings = [
            service.create_lora_training_client(MODEL, LORA, timeout=WAIT) for _ in range(3)
        ]
        samplers = [
            service.create_sampling_client(base_model=MODEL, timeout=WAIT) for _ in range(3)
        ]
        for training in trainings:
            training.save_state("start").result(WAIT)
        wipe_and_restart(server)
        # Every client hits the loss at once: heartbeat, samples, training calls.
        futures = [s.sample(PROMPT, PARAMS) for s in samplers for _ in range(30)]
        failures = []
        for training in trainings:
            try:
                train(training, range(1))
            except ModelLostError as exc:
                failures.append(exc)
        assert len(failures) == 3
        for training in trainings:
            assert training.resume(timeout=WAIT) is not None
            train(training, range(2))
        for future in futures:
            assert future.result(WAIT).sequences
        assert service.session_id != old
    assert len(events.of("session.lost")) == 1
    assert len(events.of("session.recovered")) == 1
    assert len(events.of("model.restored")) == 3
    assert len(events.of("sampler.rebound")) == 3
    assert len({meta["previous_sampler_id"] for meta in events.of("sampler.rebound")}) == 3


# ---------------------------------------------------------------------------- recovery off
def test_without_recovery_every_call_fails_typed_within_its_bound(
    server: ServerHandle, events: Events
) -> None:
    with ServiceClient(
        config_of(server), recovery=RecoveryPolicy.off(), sleep=capped_sleep
    ) as service:
        old = service.session_id
        training = service.create_lora_training_client(MODEL, LORA, timeout=WAIT)
        train(training, range(2))
        checkpoint = training.save_state("two").result(WAIT).path
        sampler = service.create_sampling_client(base_model=MODEL, timeout=WAIT)

        expire(server, old)
        events.wait_for("session.failed")
        assert service.session_id == old
        wait_until(lambda: not service._tree.heartbeat.running, "the heartbeat to stop")
        timings = []
        fb = lambda: training.forward_backward(batch(2), "cross_entropy").result(WAIT)  # noqa: E731
        for call, error_class in (
            (fb, ModelLostError),
            (lambda: training.optim_step(ADAM).result(WAIT), ModelLostError),
            (lambda: service.create_sampling_client(base_model=MODEL), SessionLostError),
            (lambda: service.create_lora_training_client(MODEL, LORA), SessionLostError),
        ):  # fmt: skip
            _, error, seconds = bounded(call)
            assert isinstance(error, error_class), error
            timings.append(seconds)
        with pytest.raises(ModelLostError) as info:
            training.save_state("more").result(WAIT)
        assert not info.value.restoring
        assert info.value.checkpoint == checkpoint
        with pytest.raises(SessionLostError) as session_info:
            service.create_sampling_client(base_model=MODEL)
        assert session_info.value.session_id == old
        # The base-model sampler of an expired session still samples: nothing was lost.
        assert sampler.sample(PROMPT, PARAMS).result(WAIT).sequences

        wipe_and_restart(server)  # now the sampling session is gone too
        _, error, seconds = bounded(lambda: sampler.sample(PROMPT, PARAMS).result(WAIT))
        assert isinstance(error, SamplerLostError), error
        timings.append(seconds)
        assert max(timings) < WAIT
    assert events.names() == [
        "session.lost",
        "session.failed",
        "model.lost",
        "sampler.failed",
    ]


# ---------------------------------------------------------------------------- torch
@pytest.mark.torch
def test_torch_training_resumes_bit_for_bit_after_its_session_expired(
    tmp_path: Path, events: Events
) -> None:
    torch_server = start_server(
        engine="torch",
        data_dir=tmp_path / "data",
        hf_home=Path(os.environ["HF_HOME"]),  # the session's cache: the model is built once
        extra_args=("--test-hooks",),
        ready_timeout=120.0,
    )
    try:
        config = config_of(torch_server)
        with ServiceClient(config) as service:
            reference = train(
                service.create_lora_training_client(MODEL, LORA, timeout=WAIT), range(4)
            )
        with ServiceClient(config, recovery=RecoveryPolicy()) as service:
            training = service.create_lora_training_client(MODEL, LORA, timeout=WAIT)
            train(training, range(2))
            training.save_state("two").result(WAIT)
            train(training, range(2, 3))
            expire(torch_server, service.session_id)
            events.wait_for("model.restored")
            with pytest.raises(ModelLostError):
                train(training, range(3, 4))
            restored = training.resume(timeout=WAIT)
            assert restored is not None
            assert restored.optim_steps == 2
            assert train(training, range(2, 4)) == reference[2:]
    finally:
        torch_server.stop()
