"""Batched completion polling (retrieve_futures) under faults: odd answers, 410, closing.

The embedded null server announces ``sample_use_retrieve_futures``. A wrapping backend edits
its ``retrieve_futures`` answers the way a buggy or restarted server might (unknown ids, a
repeated answer, a cursor going backwards) or fails the poll (410); every sample must still
get exactly its own result, once, and nothing may hang or leave a thread behind.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping

import orjson
import pytest
import structlog
from _servers import ServerHandle

from tinkex_actors import Config, ServiceClient, types
from tinkex_actors.errors import ClientClosedError
from tinkex_actors.testing import FakeBackend
from tinkex_actors.transport import RawResponse, RawStream, RequestsBackend, Timeouts

BASE_MODEL = "tinkex/tiny-llama"
PARAMS = types.SamplingParams(max_tokens=3, stop=[])
#: (path, the real answer) -> the answer the SDK gets.
Rewrite = Callable[[str, RawResponse], RawResponse]


class RewritingBackend:
    """The real backend, with ``retrieve_futures`` answers edited by ``rewrite``; records the
    bodies the SDK sent to each path."""

    def __init__(self, config: Config, rewrite: Rewrite) -> None:
        self.inner = RequestsBackend(config)
        self.rewrite = rewrite
        self.lock = threading.Lock()
        self.bodies: dict[str, list[bytes]] = {}

    def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeouts: Timeouts,
    ) -> RawResponse:
        path = url.split("?", 1)[0].rsplit("/api/v1", 1)[-1]
        with self.lock:
            self.bodies.setdefault(path, []).append(body or b"")
        answer = self.inner.send(method, url, headers, body, timeouts)
        if path == "/retrieve_futures":
            return self.rewrite(path, answer)
        return answer

    def sent(self, path: str) -> list[bytes]:
        with self.lock:
            return list(self.bodies.get(path, []))

    def open(
        self, method: str, url: str, headers: Mapping[str, str], timeouts: Timeouts
    ) -> RawStream:
        return self.inner.open(method, url, headers, timeouts)

    def interrupt(self, threads: set[int] | frozenset[int]) -> None:
        self.inner.interrupt(threads)

    def close(self) -> None:
        self.inner.close()


def _edit(answer: RawResponse, change: Callable[[dict[str, object]], None]) -> RawResponse:
    if answer.status != 200:
        return answer
    data = orjson.loads(answer.body)
    change(data)
    return RawResponse(200, {"content-type": "application/json"}, orjson.dumps(data))


@pytest.fixture
def config(null_server: ServerHandle) -> Config:
    return Config(api_key=null_server.api_key, base_url=null_server.base_url)


def _fan_out(service: ServiceClient, count: int) -> None:
    sampler = service.create_sampling_client(base_model=BASE_MODEL, timeout=30)
    assert sampler._state.batched  # the server announced batched polling
    prompts = [types.ModelInput.from_ints([1 + i % 40, 2, 3]) for i in range(count)]
    futures = [sampler.sample(prompt, PARAMS) for prompt in prompts]
    for future in futures:
        response = future.result(timeout=60)
        assert len(response.sequences) == 1
        assert len(response.sequences[0].tokens) == 3
    done: list[int] = []
    for future in futures:
        future.add_done_callback(lambda _: done.append(1))
    assert len(done) == count  # each completed once (a second set_result would not count)
    state = sampler._state
    assert (state.inflight, len(state.queued), len(state.watched)) == (0, 0, 0)


def _completions(data: dict[str, object]) -> list[dict[str, object]]:
    items = data["completions"]
    assert isinstance(items, list)
    return items


def test_unknown_request_ids_are_acknowledged_and_ignored(config: Config) -> None:
    injected = ["bogus-request-1", "bogus-request-2"]

    def add_unknown(path: str, answer: RawResponse) -> RawResponse:
        def change(data: dict[str, object]) -> None:
            if injected and _completions(data):
                _completions(data).append({"state": "finished", "request_id": injected.pop()})

        return _edit(answer, change)

    backend = RewritingBackend(config, add_unknown)
    with ServiceClient(config, backend=backend) as service:
        _fan_out(service, 40)
        time.sleep(0.2)
    acked = {
        request_id
        for body in backend.sent("/retrieve_futures")
        for request_id in orjson.loads(body)["retrieved_request_ids"]
    }
    assert not injected  # both were injected
    assert {"bogus-request-1", "bogus-request-2"} <= acked


def test_a_repeated_answer_delivers_nothing_twice(config: Config) -> None:
    last: list[RawResponse] = []

    def repeat(path: str, answer: RawResponse) -> RawResponse:
        if answer.status == 200 and last and _completions(orjson.loads(last[0].body)):
            previous = last.pop()
            last.append(answer)
            # The old answer again, with its old cursor, then the new one next time.
            return RawResponse(200, previous.headers, previous.body)
        last[:] = [answer]
        return answer

    backend = RewritingBackend(config, repeat)
    with ServiceClient(config, backend=backend) as service:
        _fan_out(service, 40)


def test_a_cursor_going_backwards_repolls_the_pending_samples_singly(config: Config) -> None:
    rewound = [False]

    def rewind(path: str, answer: RawResponse) -> RawResponse:
        def change(data: dict[str, object]) -> None:
            if not rewound[0] and isinstance(data["cursor"], int) and data["cursor"] > 1:
                rewound[0] = True
                data["cursor"] = 0
                data["completions"] = []  # a restarted server: it forgot what it reported

        return _edit(answer, change)

    backend = RewritingBackend(config, rewind)
    with ServiceClient(config, backend=backend) as service:
        _fan_out(service, 60)
    assert rewound[0]
    assert backend.sent("/retrieve_future")  # some samples were polled singly


def test_a_410_on_the_batched_poll_falls_back_to_single_polls(config: Config) -> None:
    failed = [0]

    def gone(path: str, answer: RawResponse) -> RawResponse:
        if failed[0] == 0:
            failed[0] += 1
            return FakeBackend.reply(410, b'{"detail": "sampling session expired"}')
        return answer

    backend = RewritingBackend(config, gone)
    with (
        structlog.testing.capture_logs() as logs,
        ServiceClient(config, backend=backend) as service,
    ):
        _fan_out(service, 30)
        sampler = service.create_sampling_client(base_model=BASE_MODEL, timeout=30)
        assert sampler._state.batched  # a new client tries batched polling again
        session_id = service.session_id
    assert failed[0] == 1
    assert backend.sent("/retrieve_future")
    # The log line tells an operator where it happened: tenant, session, sampler.
    (line,) = [entry for entry in logs if entry["event"] == "tinkex.sampling.batched_polling_off"]
    assert line["session_id"] == session_id
    assert line["tenant_id"] == config.tenant_id
    assert line["sampler_id"].startswith(session_id)
    assert config.api_key not in repr(line)


@pytest.fixture(scope="module")
def slow_sample_server() -> Iterator[ServerHandle]:
    from _servers import session_server

    # Samples far slower than submitting 2,000 of them, even on a loaded machine.
    with session_server("null", extra_args=("--sample-latency-ms=60000",)) as handle:
        yield handle


def test_closing_with_many_samples_in_flight_is_prompt_and_leaves_no_thread(
    slow_sample_server: ServerHandle,
) -> None:
    config = Config(api_key=slow_sample_server.api_key, base_url=slow_sample_server.base_url)
    service = ServiceClient(config)
    sampler = service.create_sampling_client(base_model=BASE_MODEL, timeout=30)
    futures = [sampler.sample(types.ModelInput.from_ints([1, 2]), PARAMS) for _ in range(2000)]
    deadline = time.monotonic() + 50
    while len(sampler._state.watched) < 2000 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(sampler._state.watched) == 2000  # all submitted, none finished (60 s latency)
    before_close = threading.active_count()
    started = time.monotonic()
    service.close(timeout=5)
    took = time.monotonic() - started
    assert took < 5  # the session's long poll was cut short, not waited out
    for future in futures:
        assert isinstance(future.exception(timeout=1), ClientClosedError)
    assert threading.active_count() < before_close


def test_a_training_step_never_waits_behind_samples_in_flight(
    slow_sample_server: ServerHandle,
) -> None:
    """2,000 samples in flight (60 s each) hold no thread a training call needs: a
    forward_backward + optim_step issued after them completes while every sample still waits."""
    config = Config(api_key=slow_sample_server.api_key, base_url=slow_sample_server.base_url)
    with ServiceClient(config) as service:
        sampler = service.create_sampling_client(base_model=BASE_MODEL, timeout=30)
        training = service.create_lora_training_client(BASE_MODEL, timeout=30)
        futures = [sampler.sample(types.ModelInput.from_ints([1, 2]), PARAMS) for _ in range(2000)]
        deadline = time.monotonic() + 50
        while len(sampler._state.watched) < 2000 and time.monotonic() < deadline:
            time.sleep(0.01)
        tokens = [1, 2, 3, 4]
        datum = types.Datum(
            types.ModelInput.from_ints(tokens[:-1]),
            {"target_tokens": tokens[1:], "weights": [1.0] * 3},
        )
        output = training.forward_backward([datum], "cross_entropy")
        stepped = training.optim_step(types.AdamParams(learning_rate=1e-3))
        assert output.result(timeout=30).metrics
        assert stepped.result(timeout=30) is not None
        assert not any(future.done() for future in futures)  # all still in flight
