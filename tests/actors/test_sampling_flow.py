"""The sample flow's bounds: in-flight slots, the queue that holds no thread, per-key back-off."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

import pytest

from tinkex_actors import Config, ServiceClient, types
from tinkex_actors.errors import ClientClosedError, QueueFullError, TinkexTimeoutError
from tinkex_actors.testing import FakeBackend
from tinkex_actors.transport import RawResponse

from ._backends import Recorder
from .conftest import BASE_MODEL

PROMPT = types.ModelInput.from_ints([5, 6, 7])
PARAMS = types.SamplingParams(max_tokens=2)


class _HoldAsample:
    """Holds every asample in the sending thread until released (a slow hop, scripted)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)

    def __call__(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes | None
    ) -> RawResponse | None:
        if path.endswith("/asample"):
            self.entered.release()
            self.release.wait(30)
        return None


def _wait_for(count: int, sem: threading.Semaphore) -> None:
    for _ in range(count):
        assert sem.acquire(timeout=10), "a sample was not dispatched"


def test_samples_beyond_the_bound_wait_in_a_queue_without_a_thread(config: Config) -> None:
    held = _HoldAsample()
    bounded = config.with_(sample_max_inflight=2, sample_max_queued=3)
    recorder = Recorder(bounded, fault=held)
    with ServiceClient(bounded, backend=recorder) as service:
        sampler = service.create_sampling_client(base_model=BASE_MODEL, timeout=30)
        state = sampler._state
        futures = [sampler.sample(PROMPT, PARAMS) for _ in range(5)]
        _wait_for(2, held.entered)
        assert (state.inflight, len(state.queued)) == (2, 3)
        time.sleep(0.2)  # give a (wrong) third dispatch the chance to show up
        assert len(recorder.sent("/asample")) == 2
        with pytest.raises(QueueFullError, match="sample_max_queued"):
            sampler.sample(PROMPT, PARAMS)
        held.release.set()
        for future in futures:
            assert future.result(timeout=30).sequences
        assert (state.inflight, len(state.queued)) == (0, 0)
    assert len(recorder.sent("/asample")) == 5


def test_a_full_queue_can_make_the_caller_wait(config: Config) -> None:
    held = _HoldAsample()
    waiting = config.with_(sample_max_inflight=1, sample_max_queued=1, sample_queue_full="wait")
    recorder = Recorder(waiting, fault=held)
    with ServiceClient(waiting, backend=recorder) as service:
        sampler = service.create_sampling_client(base_model=BASE_MODEL, timeout=30)
        first = sampler.sample(PROMPT, PARAMS)
        queued = sampler.sample(PROMPT, PARAMS)
        _wait_for(1, held.entered)
        with pytest.raises(TinkexTimeoutError, match="room in the queue"):
            sampler.sample(PROMPT, PARAMS, timeout=0.2)  # the caller chose to wait, briefly
        third: list[object] = []
        caller = threading.Thread(target=lambda: third.append(sampler.sample(PROMPT, PARAMS)))
        caller.start()
        time.sleep(0.1)
        assert not third  # still waiting for room
        held.release.set()
        caller.join(30)
        assert third
        for future in (first, queued, third[0]):
            assert future.result(timeout=30).sequences  # type: ignore[attr-defined]


def test_a_queued_sample_times_out_on_time_and_frees_its_place(config: Config) -> None:
    held = _HoldAsample()
    bounded = config.with_(sample_max_inflight=1)
    recorder = Recorder(bounded, fault=held)
    with ServiceClient(bounded, backend=recorder) as service:
        sampler = service.create_sampling_client(base_model=BASE_MODEL, timeout=30)
        first = sampler.sample(PROMPT, PARAMS)
        _wait_for(1, held.entered)
        late = sampler.sample(PROMPT, PARAMS, timeout=0.3)
        assert isinstance(late.exception(timeout=10), TinkexTimeoutError)
        assert not sampler._state.queued  # the deadline thread took it out of the queue
        held.release.set()
        assert first.result(timeout=30).sequences
    assert len(recorder.sent("/asample")) == 1  # the timed-out sample was never sent


def test_closing_fails_queued_and_in_flight_samples(config: Config) -> None:
    held = _HoldAsample()
    bounded = config.with_(sample_max_inflight=1)
    recorder = Recorder(bounded, fault=held)
    service = ServiceClient(bounded, backend=recorder)
    try:
        sampler = service.create_sampling_client(base_model=BASE_MODEL, timeout=30)
        futures = [sampler.sample(PROMPT, PARAMS) for _ in range(3)]
        _wait_for(1, held.entered)
        sampler.close()
        for future in futures:
            assert isinstance(future.exception(timeout=10), ClientClosedError)
        with pytest.raises(ClientClosedError):
            sampler.sample(PROMPT, PARAMS)
    finally:
        held.release.set()
        service.close()


class _RateLimitOnce:
    def __init__(self) -> None:
        self.left = 1

    def __call__(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes | None
    ) -> RawResponse | None:
        if path.endswith("/asample") and self.left:
            self.left -= 1
            return FakeBackend.reply(429, b'{"detail": "slow down"}')
        return None


class _SendTimes:
    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes | None
    ) -> RawResponse | None:
        if path.endswith("/asample"):
            self.times.append(time.monotonic())
        return None


def test_the_429_back_off_is_shared_by_every_client_of_a_key(config: Config) -> None:
    """Two ServiceClients on one key with different tags are two tenants (pools, lanes), but
    the server limits the key: a 429 to one makes the other wait too."""
    config_a = config.with_(tags=("team-a",))
    config_b = config.with_(tags=("team-b",), timeout=30.0)
    times_b = _SendTimes()
    with (
        ServiceClient(config_a, backend=Recorder(config_a, fault=_RateLimitOnce())) as a,
        ServiceClient(config_b, backend=Recorder(config_b, fault=times_b)) as b,
    ):
        assert a._runtime.tenant is not b._runtime.tenant
        limiter = a._runtime.tenant.limiter
        assert b._runtime.tenant.limiter is limiter
        sampler_a = a.create_sampling_client(base_model=BASE_MODEL, timeout=30)
        sampler_b = b.create_sampling_client(base_model=BASE_MODEL, timeout=30)
        retried = sampler_a.sample(PROMPT, PARAMS)
        deadline = time.monotonic() + 10
        while not limiter.backoff_until and time.monotonic() < deadline:
            time.sleep(0.005)
        backoff_until = limiter.backoff_until
        assert backoff_until > 0.0
        assert sampler_b.sample(PROMPT, PARAMS).result(timeout=30).sequences
        assert times_b.times[0] >= backoff_until  # B waited out A's back-off
        assert retried.result(timeout=30).sequences
