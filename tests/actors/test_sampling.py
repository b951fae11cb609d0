"""SamplingClient against the null server: results, fan-out, back-off, tenants, bad input."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import orjson
import pytest
from _servers import ServerHandle

from tinkex_actors import Config, SamplingClient, ServiceClient, errors, telemetry, types
from tinkex_actors.errors import ClientClosedError, TinkexTimeoutError, ValidationError
from tinkex_actors.testing import FakeBackend, SleepRecorder
from tinkex_actors.transport import RawResponse

from ._backends import Recorder
from .conftest import BASE_MODEL

PROMPT = types.ModelInput.from_ints([1, 2, 3, 4])


@pytest.fixture
def sampler(service: ServiceClient) -> SamplingClient:
    return service.create_sampling_client(base_model=BASE_MODEL, timeout=30)


def test_sample_returns_sequences_with_ids(sampler: SamplingClient) -> None:
    params = types.SamplingParams(max_tokens=6, seed=3)
    response = sampler.sample(PROMPT, params, num_samples=3).result(timeout=30)
    assert len(response.sequences) == 3
    assert all(len(s.tokens) == 6 for s in response.sequences)
    assert all(s.logprobs is not None and len(s.logprobs) == 6 for s in response.sequences)
    ids = [s.sequence_id for s in response.sequences]
    assert None not in ids
    assert len(set(ids)) == 3
    # Same seed, same tokens; a dict of params is accepted.
    again = sampler.sample(PROMPT, {"max_tokens": 6, "seed": 3}, num_samples=3).result(30)
    assert [s.tokens for s in again.sequences] == [s.tokens for s in response.sequences]


def test_prompt_logprobs_and_compute_logprobs(sampler: SamplingClient) -> None:
    response = sampler.sample(
        PROMPT, types.SamplingParams(max_tokens=1), prompt_logprobs=True, topk_prompt_logprobs=2
    ).result(timeout=30)
    assert response.prompt_logprobs is not None
    assert len(response.prompt_logprobs) == 4
    assert response.prompt_logprobs[0] is None
    assert response.topk_prompt_logprobs is not None
    logprobs = sampler.compute_logprobs(PROMPT).result(timeout=30)
    assert logprobs[0] is None
    assert len(logprobs) == 4
    assert logprobs == pytest.approx(response.prompt_logprobs)


def test_seq_ids_count_from_zero_and_headers(null_server: ServerHandle) -> None:
    config = Config(api_key=null_server.api_key, base_url=null_server.base_url)
    recorder = Recorder(config)
    with ServiceClient(config, backend=recorder) as service:
        sampler = service.create_sampling_client(base_model=BASE_MODEL, timeout=30)
        for _ in range(3):
            sampler.sample(PROMPT, types.SamplingParams(max_tokens=2)).result(timeout=30)
        sent = recorder.sent("/asample")
        assert [orjson.loads(e.body or b"")["seq_id"] for e in sent] == [0, 1, 2]
        assert all(e.headers["X-Tinker-Sampling-Backpressure"] == "1" for e in sent)
        assert all(
            orjson.loads(e.body or b"")["sampling_session_id"] == sampler.sampler_id for e in sent
        )
        polls = recorder.sent("/retrieve_future")
        assert all(e.headers["X-Tinker-Request-Type"] == "Sample" for e in polls)
        assert all(e.headers["Accept"] == "application/x-protobuf" for e in polls)
        assert polls[0].headers["X-Tinker-Request-Iteration"] == "0"


def test_thousand_samples_from_32_threads(config: Config) -> None:
    bounded = config.with_(sample_dispatch_threads=8, poll_threads=16)
    with ServiceClient(bounded) as service:
        sampler = service.create_sampling_client(base_model=BASE_MODEL, timeout=30)
        params = types.SamplingParams(max_tokens=3, stop=[])  # no EOS stop: always 3 tokens
        peak = [0]
        stop = threading.Event()
        tenant_prefix = f"tinkex-{bounded.tenant_id[:8]}"

        def watch() -> None:
            while not stop.wait(0.01):
                alive = [t for t in threading.enumerate() if t.name.startswith(tenant_prefix)]
                peak[0] = max(peak[0], len(alive))

        watcher = threading.Thread(target=watch, name="test-watcher")
        watcher.start()

        def worker(index: int) -> list[int]:
            prompt = types.ModelInput.from_ints([1 + index % 50, 2, 3])
            futures = [sampler.sample(prompt, params) for _ in range(32)]
            lengths = []
            for future in futures:
                response = future.result(timeout=120)
                assert response.sequences[0].sequence_id is not None
                lengths.append(len(response.sequences[0].tokens))
            return lengths

        try:
            with ThreadPoolExecutor(32, thread_name_prefix="test-fanout") as pool:
                results = [x for chunk in pool.map(worker, range(32)) for x in chunk]
        finally:
            stop.set()
            watcher.join()
        assert len(results) == 1024
        assert set(results) == {3}
        # The lanes' bounds, the general pool (4) and the deadline thread: never one per sample.
        assert 0 < peak[0] <= 8 + 16 + 4 + 1
        assert sampler._state.inflight == 0
        assert not sampler._state.queued


class _RateLimitTenantA:
    """Answers 429 to tenant A's first asample calls (a fault in front of the real server)."""

    def __init__(self, times: int) -> None:
        self.left = times
        self.lock = threading.Lock()

    def __call__(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes | None
    ) -> RawResponse | None:
        if not path.endswith("/asample"):
            return None
        with self.lock:
            if self.left <= 0:
                return None
            self.left -= 1
        return FakeBackend.reply(429, b'{"detail": "slow down"}')


def test_429_backs_off_the_tenant_and_resends_the_same_request(config: Config) -> None:
    recorder = Recorder(config, fault=_RateLimitTenantA(times=1))
    with ServiceClient(config, backend=recorder) as service:
        sampler = service.create_sampling_client(base_model=BASE_MODEL, timeout=30)
        limiter = service._runtime.tenant.limiter
        response = sampler.sample(PROMPT, types.SamplingParams(max_tokens=2)).result(timeout=30)
        assert len(response.sequences) == 1
        sent = recorder.sent("/asample")
        assert len(sent) == 2
        # Re-sent after the back-off with the same seq_id and idempotency key.
        assert sent[0].body == sent[1].body
        assert sent[0].headers["X-Idempotency-Key"] == sent[1].headers["X-Idempotency-Key"]
        assert limiter.backoff_until == 0.0  # success cleared it
        assert limiter.throttled()  # the throttle window is open
        assert limiter.max_throttled == config.sample_max_inflight_throttled


def test_a_rate_limited_tenant_does_not_slow_another(null_server: ServerHandle) -> None:
    config_a = Config(api_key=null_server.api_key, base_url=null_server.base_url)
    config_b = Config(api_key=null_server.other_api_key, base_url=null_server.base_url)
    recorder_a = Recorder(config_a, fault=_RateLimitTenantA(times=10_000))
    order: list[str] = []
    lock = threading.Lock()
    with ServiceClient(config_a, backend=recorder_a) as a, ServiceClient(config_b) as b:
        sampler_a = a.create_sampling_client(base_model=BASE_MODEL, timeout=30)
        sampler_b = b.create_sampling_client(base_model=BASE_MODEL, timeout=30)
        params = types.SamplingParams(max_tokens=2)

        def note(name: str) -> object:
            def done(_: object) -> None:
                with lock:
                    order.append(name)

            return done

        futures_a = [sampler_a.sample(PROMPT, params, timeout=60) for _ in range(20)]
        for future in futures_a:
            future.add_done_callback(note("a"))  # type: ignore[arg-type]
        futures_b = [sampler_b.sample(PROMPT, params) for _ in range(50)]
        for future in futures_b:
            future.add_done_callback(note("b"))  # type: ignore[arg-type]
        for future in futures_b:
            assert future.result(timeout=60).sequences
        # Every B sample finished while A was still backing off: A completed none.
        with lock:
            assert order.count("b") == 50
            assert "a" not in order
        assert b._runtime.tenant.limiter.backoff_until == 0.0
        assert a._runtime.tenant.limiter.backoff_until > 0.0
        assert a._runtime.tenant is not b._runtime.tenant
        recorder_a.fault = None  # the rate limit lifts: A's samples complete
        for future in futures_a:
            assert future.result(timeout=60).sequences
    assert order.count("a") == 20


def test_timeout_and_await_timeout(null_server: ServerHandle) -> None:
    config = Config(api_key=null_server.api_key, base_url=null_server.base_url)
    recorder = Recorder(config, fault=_RateLimitTenantA(times=10_000))
    with ServiceClient(config, backend=recorder) as service:
        sampler = service.create_sampling_client(base_model=BASE_MODEL, timeout=30)
        params = types.SamplingParams(max_tokens=2)
        # timeout: the call's own deadline; the future fails with TinkexTimeoutError.
        timed = sampler.sample(PROMPT, params, timeout=0.3)
        assert isinstance(timed.exception(timeout=30), TinkexTimeoutError)
        # await_timeout: result() without a timeout waits that long, the call goes on.
        waiting = sampler.sample(PROMPT, params, await_timeout=0.05)
        with pytest.raises(TinkexTimeoutError):
            waiting.result()
        assert not waiting.done()
        recorder.fault = None
        assert waiting.result(timeout=30).sequences
        # The client is still usable.
        assert sampler.sample(PROMPT, params).result(timeout=30).sequences


def test_queue_state_change_is_reported(null_server: ServerHandle) -> None:
    config = Config(api_key=null_server.api_key, base_url=null_server.base_url)
    paused = [2]

    def fault(
        method: str, path: str, headers: Mapping[str, str], body: bytes | None
    ) -> RawResponse | None:
        if not path.endswith("/retrieve_future") or paused[0] <= 0:
            return None
        paused[0] -= 1
        request_id = orjson.loads(body or b"{}")["request_id"]
        answer = {
            "type": "try_again",
            "request_id": request_id,
            "queue_state": "paused_capacity",
            "queue_state_reason": "test pause",
        }
        return FakeBackend.reply(200, orjson.dumps(answer), {"content-type": "application/json"})

    seen: list[dict[str, object]] = []
    telemetry.attach(
        "test-queue", telemetry.QUEUE_STATE_CHANGE, lambda e, m, md, c: seen.append(dict(md))
    )
    try:
        with ServiceClient(config, backend=Recorder(config, fault=fault)) as service:
            sampler = service.create_sampling_client(base_model=BASE_MODEL, timeout=30)
            sampler.sample(PROMPT, types.SamplingParams(max_tokens=2)).result(timeout=30)
    finally:
        telemetry.detach("test-queue")
    # One change to paused (the repeat is not an event), one back to active.
    assert [m["queue_state"] for m in seen] == ["paused_capacity", "active"]
    assert seen[0]["reason"] == "test pause"
    assert seen[0]["client"] == "sampling"


def test_bad_input_and_closed_client(service: ServiceClient, sampler: SamplingClient) -> None:
    params = types.SamplingParams(max_tokens=2)
    bad: list[tuple[Callable[[], object], str]] = [
        (lambda: sampler.sample([1, 2], params), "prompt"),  # type: ignore[arg-type]
        (lambda: sampler.sample(types.ModelInput.empty(), params), "prompt"),
        (lambda: sampler.sample(PROMPT, "hot"), "sampling_params"),  # type: ignore[arg-type]
        (lambda: sampler.sample(PROMPT, {"temperature": 1, "bogus": 1}), "sampling_params"),
        (lambda: sampler.sample(PROMPT, params, num_samples=0), "num_samples"),
        (lambda: sampler.sample(PROMPT, params, prompt_logprobs="yes"), "prompt_logprobs"),  # type: ignore[arg-type]
        (lambda: sampler.sample(PROMPT, params, topk_prompt_logprobs=-1), "topk_prompt_logprobs"),
        # SampleRequest checks these; the error names the argument as the caller spelled it.
        (lambda: sampler.sample(PROMPT, params, topk_sample_logprobs=-1), "topk_sample_logprobs"),
        (
            lambda: sampler.sample(PROMPT, params, prompt_logprobs_last_n=2),
            "prompt_logprobs_last_n",
        ),
        (lambda: sampler.sample(PROMPT, params, num_samples=1.0), "num_samples"),  # type: ignore[arg-type]
        (lambda: sampler.sample(PROMPT, params, timeout=0), "timeout"),
        (lambda: sampler.sample(PROMPT, params, await_timeout=float("nan")), "await_timeout"),
    ]
    for call, field in bad:
        with pytest.raises(ValidationError) as info:
            call()
        assert info.value.field == field
    with pytest.raises(ValidationError):
        service.create_sampling_client()
    with pytest.raises(ValidationError):
        service.create_sampling_client(model_path="http://elsewhere")
    sampler.close()
    with pytest.raises(ClientClosedError):
        sampler.sample(PROMPT, params)
    assert sampler.closed


def test_numpy_counts_are_accepted(sampler: SamplingClient) -> None:
    params = types.SamplingParams(max_tokens=2)
    response = sampler.sample(PROMPT, params, num_samples=np.int64(2)).result(timeout=30)  # type: ignore[arg-type]
    assert len(response.sequences) == 2


class _FailFirstAsample:
    """Answers the first asample with ``status`` and ``headers`` (then lets them through)."""

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.answer: RawResponse | None = FakeBackend.reply(status, b'{"detail": "x"}', headers)

    def __call__(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes | None
    ) -> RawResponse | None:
        if not path.endswith("/asample"):
            return None
        answer, self.answer = self.answer, None
        return answer


def test_a_sample_honours_retry_after_ms(config: Config) -> None:
    recorder = Recorder(config, fault=_FailFirstAsample(503, {"retry-after-ms": "300"}))
    sleeps = SleepRecorder()
    with ServiceClient(config, backend=recorder, sleep=sleeps) as service:
        sampler = service.create_sampling_client(base_model=BASE_MODEL, timeout=30)
        response = sampler.sample(PROMPT, types.SamplingParams(max_tokens=2)).result(timeout=30)
        assert len(response.sequences) == 1
    sent = recorder.sent("/asample")
    assert len(sent) == 2
    assert sent[0].headers["X-Idempotency-Key"] == sent[1].headers["X-Idempotency-Key"]
    assert sleeps.delays == [0.3]


def test_a_sample_is_not_retried_when_the_server_says_so(config: Config) -> None:
    recorder = Recorder(config, fault=_FailFirstAsample(503, {"x-should-retry": "false"}))
    sleeps = SleepRecorder()
    with ServiceClient(config, backend=recorder, sleep=sleeps) as service:
        sampler = service.create_sampling_client(base_model=BASE_MODEL, timeout=30)
        future = sampler.sample(PROMPT, types.SamplingParams(max_tokens=2))
        with pytest.raises(errors.InternalServerError):
            future.result(timeout=30)
    assert len(recorder.sent("/asample")) == 1
    assert sleeps.delays == []
