"""The retrieve_future loop, answer by answer (scripted backend: fault timing without sleeping)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import orjson
import pytest

from tinkex_actors import telemetry
from tinkex_actors.actors._poller import poll_future
from tinkex_actors.actors._queue_state import QueueStateTracker
from tinkex_actors.actors._runtime import Runtime
from tinkex_actors.actors._tenant import tenants
from tinkex_actors.config import Config
from tinkex_actors.errors import (
    APIConnectionError,
    BadRequestError,
    ClientClosedError,
    GoneError,
    NotFoundError,
    RequestErrorCategory,
    RequestFailedError,
    TinkexTimeoutError,
)
from tinkex_actors.testing import FakeBackend, SentRequest, SleepRecorder
from tinkex_actors.transport import RawResponse
from tinkex_actors.types import (
    ClientConfigResponse,
    OptimStepResponse,
    SampledSequence,
    SampleResponse,
)
from tinkex_actors.wire import encode_sample_response

CONFIG = Config(api_key="tml-poller-unit-key", base_url="http://127.0.0.1:9")
JSON = {"content-type": "application/json"}
PROTO = {"content-type": "application/x-protobuf"}


Setup = tuple[Runtime, FakeBackend, SleepRecorder]


def assert_backoff(delays: list[float], bases: list[float]) -> None:
    """Each delay is its doubling base, shortened by at most the policy's jitter (25 %)."""
    assert len(delays) == len(bases)
    for delay, base in zip(delays, bases, strict=True):
        assert 0.75 * base <= delay <= base


def json_reply(status: int, data: object) -> RawResponse:
    return FakeBackend.reply(status, orjson.dumps(data), JSON)


def try_again(state: str = "active", reason: str | None = None) -> RawResponse:
    body = {"type": "try_again", "request_id": "r1", "queue_state": state}
    if reason:
        body["queue_state_reason"] = reason
    return json_reply(200, body)


@pytest.fixture
def setup() -> Iterator[tuple[Runtime, FakeBackend, SleepRecorder]]:
    backend = FakeBackend()
    sleeps = SleepRecorder()
    tenant = tenants.acquire(CONFIG, backend=backend, sleep=sleeps)
    runtime = Runtime(CONFIG, tenant, "s-1", ClientConfigResponse(), sleep=sleeps)
    yield runtime, backend, sleeps
    tenants.release(tenant, 5)


def poll(runtime: Runtime, **kwargs: object) -> object:
    options: dict[str, object] = {"request_type": "OptimStep", "proto": False}
    options.update(kwargs)
    return poll_future(runtime, "r1", OptimStepResponse, **options)  # type: ignore[arg-type]


def test_try_again_polls_at_once_with_iteration_headers(setup: Setup) -> None:
    runtime, backend, sleeps = setup
    backend.add(try_again(), try_again(), json_reply(200, {"metrics": {"a:sum": 1.0}}))
    result = poll(runtime, roundtrip=0.25)
    assert result == OptimStepResponse(metrics={"a:sum": 1.0})
    assert sleeps.delays == []
    headers = [s.headers for s in backend.sent]
    assert [h["X-Tinker-Request-Iteration"] for h in headers] == ["0", "1", "2"]
    assert {h["X-Tinker-Request-Type"] for h in headers} == {"OptimStep"}
    assert headers[0]["X-Tinker-Create-Promise-Roundtrip-Time"] == "0.250000"
    assert "X-Tinker-Create-Promise-Roundtrip-Time" not in headers[1]
    assert all(h["Accept"] == "application/json" for h in headers)
    assert orjson.loads(backend.sent[0].body or b"") == {
        "request_id": "r1",
        "allow_metadata_only": True,
    }
    assert all(s.timeouts.read == CONFIG.poll_timeout for s in backend.sent)


def test_proto_results_are_decoded(setup: Setup) -> None:
    runtime, backend, _ = setup
    response = SampleResponse(sequences=[SampledSequence(stop_reason="stop", tokens=[4, 5])])
    backend.add(FakeBackend.reply(200, encode_sample_response(response), PROTO))
    result = poll_future(runtime, "r1", SampleResponse, request_type="Sample", proto=True)
    assert result == response
    assert backend.sent[0].headers["Accept"] == "application/x-protobuf"


def test_408_and_5xx_repoll_then_back_off(setup: Setup) -> None:
    runtime, backend, sleeps = setup
    backend.add(
        json_reply(408, {"queue_state": "paused_rate_limit"}),
        json_reply(500, {}),
        json_reply(502, {}),
        json_reply(503, {}),
        json_reply(503, {}),
        json_reply(200, {}),
    )
    assert poll(runtime) == OptimStepResponse()
    # Two 5xx in a row at once, then 1 s, 2 s.
    assert_backoff(sleeps.delays, [1.0, 2.0])


def test_429_and_connection_errors_back_off_exponentially(setup: Setup) -> None:
    runtime, backend, sleeps = setup
    backend.add(
        json_reply(429, {}),
        APIConnectionError("reset"),
        APIConnectionError("reset"),
        json_reply(200, {}),
        APIConnectionError("reset"),
        json_reply(200, {}),
    )
    assert poll(runtime) == OptimStepResponse()
    assert_backoff(sleeps.delays, [1.0, 2.0, 4.0])
    assert poll(runtime) == OptimStepResponse()
    assert_backoff(sleeps.delays[-1:], [1.0])  # an HTTP answer reset the count


def test_fatal_answers_raise_typed_errors(setup: Setup) -> None:
    runtime, backend, _ = setup
    backend.add(json_reply(410, {"detail": "expired"}))
    with pytest.raises(GoneError):
        poll(runtime)
    backend.add(json_reply(404, {"detail": "unknown"}))
    with pytest.raises(NotFoundError):
        poll(runtime)
    before = len(backend.sent)
    backend.add(*[json_reply(400, {"detail": "bad"}) for _ in range(4)])
    with pytest.raises(BadRequestError):
        poll(runtime)
    assert len(backend.sent) - before == 4  # 3 retries, then the error
    backend.add(json_reply(200, {"error": "boom", "category": "user"}))
    with pytest.raises(RequestFailedError) as info:
        poll(runtime)
    assert info.value.category is RequestErrorCategory.USER
    assert info.value.request_id == "r1"


def test_metadata_only_answer_repolls_for_the_payload(setup: Setup) -> None:
    runtime, backend, _ = setup
    backend.add(
        json_reply(200, {"status": "complete_metadata", "response_payload_size": 10}),
        json_reply(200, {}),
    )
    assert poll(runtime) == OptimStepResponse()
    flags = [orjson.loads(s.body or b"")["allow_metadata_only"] for s in backend.sent]
    assert flags == [True, False]


def test_billing_pause_is_waited_out(setup: Setup) -> None:
    runtime, backend, sleeps = setup
    backend.add(json_reply(402, {}), json_reply(402, {}), json_reply(200, {}))
    assert poll(runtime) == OptimStepResponse()
    assert sleeps.delays == [5.0, 5.0]


def test_deadline_and_close_stop_polling(setup: Setup) -> None:
    runtime, backend, _ = setup
    with pytest.raises(TinkexTimeoutError):
        poll(runtime, deadline=time.monotonic() - 1)
    assert backend.sent == []
    runtime.close()
    with pytest.raises(ClientClosedError):
        poll(runtime)


def test_a_deadline_shortens_the_long_poll() -> None:
    def slow_try_again(request: SentRequest) -> RawResponse:
        time.sleep(0.05)  # the server holds the poll
        return try_again()

    backend = FakeBackend(handler=slow_try_again)
    tenant = tenants.acquire(CONFIG, backend=backend, sleep=SleepRecorder())
    try:
        runtime = Runtime(CONFIG, tenant, "s-1", ClientConfigResponse())
        with pytest.raises(TinkexTimeoutError):
            poll(runtime, deadline=time.monotonic() + 0.2)
        assert 1 <= len(backend.sent) <= 5
        assert all(s.timeouts.read <= 0.2 for s in backend.sent)
    finally:
        tenants.release(tenant, 5)


def test_queue_state_changes_are_events_and_throttled_warnings(setup: Setup) -> None:
    runtime, backend, _ = setup
    tracker = QueueStateTracker("training", "m-1", CONFIG.tenant_id)
    seen: list[dict[str, object]] = []
    telemetry.attach(
        "test-poller-queue", telemetry.QUEUE_STATE_CHANGE, lambda e, m, md, c: seen.append(dict(md))
    )
    try:
        backend.add(
            try_again("paused_rate_limit"),
            try_again("paused_rate_limit"),
            try_again("paused_capacity", "busy"),
            json_reply(200, {}),
        )
        poll(runtime, tracker=tracker)
    finally:
        telemetry.detach("test-poller-queue")
    assert [(m["queue_state"], m["previous_state"]) for m in seen] == [
        ("paused_rate_limit", "active"),
        ("paused_capacity", "paused_rate_limit"),
        ("active", "paused_capacity"),
    ]
    assert seen[1]["reason"] == "busy"
    assert seen[0]["client"] == "training"
    assert tracker.state == "active"


def test_paused_states_are_logged_at_most_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tracker = QueueStateTracker("sampling", "s-1", CONFIG.tenant_id)
    with caplog.at_level(logging.WARNING, logger="tinkex_actors.queue"):
        for _ in range(3):
            tracker.update("paused_capacity")
            tracker.update("active")
            tracker.update("paused_rate_limit", "limit hit")
    warnings = [r for r in caplog.records if "tinkex.queue.paused" in r.getMessage()]
    assert len(warnings) == 1
    assert "paused_capacity" in warnings[0].getMessage()
