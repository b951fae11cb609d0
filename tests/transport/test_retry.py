"""Retry decisions and exact back-off timing, with a scripted backend and no real sleeps."""

from __future__ import annotations

import email.utils
from collections.abc import Iterator
from typing import Any

import pytest

from tinkex_actors import errors, telemetry
from tinkex_actors.config import Config
from tinkex_actors.testing import FakeBackend, SleepRecorder
from tinkex_actors.transport import HTTPTransport, RetryPolicy, call_with_retries

from .conftest import API_KEY

ok = FakeBackend.reply


def make(
    *replies: Any, uniform: float = 0.0, **config: Any
) -> tuple[HTTPTransport, FakeBackend, SleepRecorder]:
    backend = FakeBackend(replies)
    sleeps = SleepRecorder()
    cfg = Config(api_key=API_KEY, base_url="http://tinker.test", **config)
    transport = HTTPTransport(cfg, backend=backend, sleep=sleeps, uniform=lambda: uniform)
    return transport, backend, sleeps


def test_full_backoff_schedule_without_jitter() -> None:
    transport, backend, sleeps = make(*[ok(503)] * 11)
    with pytest.raises(errors.InternalServerError):
        transport.request("POST", "/api/v1/x", body=b"{}")
    assert sleeps.delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0, 10.0, 10.0]
    assert len(backend.sent) == 11
    assert [r.headers["x-stainless-retry-count"] for r in backend.sent] == [
        str(i) for i in range(11)
    ]
    assert len({r.headers["X-Idempotency-Key"] for r in backend.sent}) == 1


def test_jitter_shortens_each_delay_by_at_most_a_quarter() -> None:
    transport, _, sleeps = make(ok(503), ok(503), ok(503), ok(200), uniform=0.999999)
    transport.request("GET", "/api/v1/x")
    for got, base in zip(sleeps.delays, [0.5, 1.0, 2.0], strict=True):
        assert 0.75 * base <= got < base
        assert got == pytest.approx(0.75 * base, rel=1e-5)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
def test_retryable_statuses(status: int) -> None:
    transport, backend, _sleeps = make(ok(status), ok(200))
    assert transport.request("POST", "/api/v1/x", body=b"{}").retries_taken == 1
    assert len(backend.sent) == 2


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 409, 410, 413, 422])
def test_other_statuses_are_not_retried(status: int) -> None:
    transport, backend, sleeps = make(ok(status, b"nope"), ok(200))
    with pytest.raises(errors.APIStatusError) as info:
        transport.request("POST", "/api/v1/x", body=b"{}")
    assert info.value.status_code == status
    assert len(backend.sent) == 1
    assert sleeps.delays == []


def test_network_errors_are_retried_with_backoff() -> None:
    transport, _backend, sleeps = make(
        errors.APIConnectionError("reset"), errors.APITimeoutError("slow"), ok(200)
    )
    assert transport.request("GET", "/api/v1/x").retries_taken == 2
    assert sleeps.delays == [0.5, 1.0]


def test_max_retries_zero_and_per_call_override() -> None:
    transport, backend, sleeps = make(errors.APIConnectionError("down"), max_retries=5)
    with pytest.raises(errors.APIConnectionError) as info:
        transport.request("POST", "/api/v1/session_heartbeat", body=b"{}", max_retries=0)
    assert info.value.path == "/api/v1/session_heartbeat"
    assert len(backend.sent) == 1
    assert sleeps.delays == []
    transport2, backend2, _sleeps2 = make(*[ok(500)] * 3, max_retries=2)
    with pytest.raises(errors.InternalServerError):
        transport2.request("GET", "/api/v1/x")
    assert len(backend2.sent) == 3


def test_redirect_loop_is_bounded() -> None:
    loop = ok(302, b"", {"Location": "/api/v1/loop"})
    transport, backend, _ = make(*[loop] * 10)
    with pytest.raises(errors.APIStatusError, match="too many redirects"):
        transport.request("GET", "/api/v1/loop")
    assert len(backend.sent) == 6


def test_post_redirected_by_303_becomes_a_get_without_body() -> None:
    transport, backend, _ = make(ok(303, b"", {"Location": "/api/v1/result"}), ok(200))
    transport.request("POST", "/api/v1/x", body=b"{}")
    second = backend.sent[1]
    assert (second.method, second.body, second.url) == (
        "GET",
        None,
        "http://tinker.test/api/v1/result",
    )
    assert "Content-Type" not in second.headers


# ------------------------------------------------------------------ the policy itself
@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "7"}, 0.25),
        ({"retry-after-ms": "junk", "retry-after": "7"}, 7.0),
        ({"retry-after": "60"}, 60.0),
        ({"retry-after": "60.5"}, None),
        ({"retry-after": "-1"}, None),
        ({"retry-after": "0"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),  # in the past
        ({}, None),
    ],
)
def test_retry_after_parsing(headers: dict[str, str], expected: float | None) -> None:
    assert RetryPolicy().retry_after(headers, now=1_000_000.0) == expected


def test_retry_after_http_date_is_relative_to_now() -> None:
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 12, usegmt=True)
    assert RetryPolicy().retry_after({"retry-after": date}, now) == pytest.approx(12.0)


def test_should_retry_flags() -> None:
    policy = RetryPolicy()
    assert policy.should_retry(400, {"x-should-retry": "TRUE"})
    assert not policy.should_retry(503, {"x-should-retry": "false"})
    assert policy.should_retry(503, {"x-should-retry": "maybe"})
    assert not policy.should_retry(404, {})


def test_backoff_caps_large_attempt_numbers() -> None:
    assert RetryPolicy().backoff(10_000, 0.0) == 10.0


# ------------------------------------------------------------------ the one retry loop
def test_a_conflict_is_retried_only_when_the_server_says_so() -> None:
    """409 is final (a save under an existing name takes 1 attempt, not 11), unless the
    server answers ``x-should-retry: true`` (e.g. a transient lock)."""
    transport, backend, sleeps = make(ok(409, b'{"detail": "exists"}'))
    with pytest.raises(errors.ConflictError):
        transport.request("POST", "/api/v1/save_weights", body=b"{}")
    assert (len(backend.sent), sleeps.delays) == (1, [])
    transport, backend, sleeps = make(ok(409, b"", {"x-should-retry": "true"}), ok(200))
    assert transport.request("POST", "/api/v1/x", body=b"{}").retries_taken == 1
    assert sleeps.delays == [0.5]
    transport, backend, sleeps = make(ok(409, b"", {"x-should-retry": "false"}))
    with pytest.raises(errors.ConflictError):
        transport.request("POST", "/api/v1/x", body=b"{}")
    assert len(backend.sent) == 1


def test_retry_after_ms_wins_over_the_backoff_and_is_capped() -> None:
    transport, _, sleeps = make(
        ok(503, b"", {"retry-after-ms": "1500"}),
        ok(429, b"", {"retry-after-ms": "120000"}),  # above the cap: the back-off instead
        ok(200),
    )
    transport.request("POST", "/api/v1/x", body=b"{}")
    assert sleeps.delays == [1.5, 1.0]


def test_a_deadline_stops_retrying_before_it_passes() -> None:
    import time

    transport, backend, sleeps = make(*[ok(503)] * 11)
    with pytest.raises(errors.InternalServerError):
        transport.request(
            "POST", "/api/v1/x", body=b"{}", deadline=time.monotonic() + 1.6
        )  # 0.5 + 1.0 fit, + 2.0 does not
    assert sleeps.delays == [0.5, 1.0]
    assert len(backend.sent) == 3


def test_a_sleep_that_reports_closing_stops_retrying() -> None:
    transport, backend, _ = make(*[ok(503)] * 5)
    waits: list[float] = []

    def closing(delay: float) -> bool:
        waits.append(delay)
        return True

    with pytest.raises(errors.InternalServerError):
        transport.request("POST", "/api/v1/x", body=b"{}", sleep=closing)
    assert (len(waits), len(backend.sent)) == (1, 1)


def test_call_with_retries_runs_any_operation() -> None:
    attempts: list[int] = []
    sleeps = SleepRecorder()
    reported: list[tuple[int, str, float]] = []

    def operation(attempt: int) -> str:
        attempts.append(attempt)
        if attempt < 2:
            raise errors.APIConnectionError("reset")
        return "done"

    result = call_with_retries(
        operation,
        policy=RetryPolicy(),
        max_retries=5,
        sleep=sleeps,
        uniform=lambda: 0.0,
        on_retry=lambda n, error, delay: reported.append((n, type(error).__name__, delay)),
    )
    assert result == "done"
    assert attempts == [0, 1, 2]
    assert sleeps.delays == [0.5, 1.0]
    assert reported == [(0, "APIConnectionError", 0.5), (1, "APIConnectionError", 1.0)]


def test_non_api_errors_are_never_retried() -> None:
    calls: list[int] = []

    def operation(attempt: int) -> None:
        calls.append(attempt)
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        call_with_retries(operation, policy=RetryPolicy(), max_retries=3, sleep=SleepRecorder())
    assert calls == [0]


def test_status_delays_fix_the_wait_of_a_status() -> None:
    policy = RetryPolicy(status_delays={503: 30.0})
    pending = errors.InternalServerError("x", status_code=503, headers={})
    assert policy.delay_for(pending, 0, 0.0, 0.0) == 30.0
    shorter = errors.InternalServerError("x", status_code=503, headers={"retry-after": "2"})
    assert policy.delay_for(shorter, 0, 0.0, 0.0) == 2.0
    other = errors.InternalServerError("x", status_code=500, headers={})
    assert policy.delay_for(other, 1, 0.0, 0.0) == 1.0


# ------------------------------------------------------------------ telemetry from requests
@pytest.fixture
def events() -> Iterator[list[tuple[tuple[str, ...], dict[str, Any], dict[str, Any]]]]:
    got: list[tuple[tuple[str, ...], dict[str, Any], dict[str, Any]]] = []
    telemetry.attach(
        "test-http-events",
        [
            telemetry.HTTP_REQUEST_START,
            telemetry.HTTP_REQUEST_STOP,
            telemetry.HTTP_REQUEST_EXCEPTION,
            telemetry.HTTP_REQUEST_RETRY,
        ],
        lambda e, m, md, _: got.append((e, dict(m), dict(md))),
    )
    yield got
    telemetry.detach("test-http-events")


def test_request_events(events: list[Any]) -> None:
    transport, _, _ = make(ok(503), ok(200))
    transport.request(
        "POST", "/api/v1/retrieve_future", body=b"{}", request_type="Sample", iteration=0
    )
    names = [e[0][-1] for e in events]
    assert names == ["start", "retry", "stop"]
    start, retry, stop = (e[2] for e in events)
    assert start["method"] == "POST"
    assert start["path"] == "/api/v1/retrieve_future"
    assert start["request_type"] == "Sample"
    assert start["tenant_id"] == transport.config.tenant_id
    assert retry["attempt"] == 1
    assert retry["status"] == 503
    assert events[1][1]["delay"] == 500_000_000
    assert stop["status"] == 200
    assert stop["retry_count"] == 1
    assert start["span_id"] == retry["span_id"] == stop["span_id"]
    assert events[2][1]["duration"] >= 0
    assert "monotonic_time" in events[0][1]
    assert "system_time" in events[0][1]


def test_request_exception_event(events: list[Any]) -> None:
    transport, _, _ = make(ok(404, b"missing"))
    with pytest.raises(errors.NotFoundError):
        transport.request("GET", "/api/v1/models/m1")
    assert [e[0][-1] for e in events] == ["start", "exception"]
    failed = events[1][2]
    assert failed["status"] == 404
    assert failed["kind"] == "NotFoundError"
    assert failed["retry_count"] == 0
    assert "missing" in failed["reason"]


def test_a_failing_handler_never_breaks_a_request() -> None:
    def broken(*_: Any) -> None:
        raise RuntimeError("handler bug")

    telemetry.attach("broken-http-handler", telemetry.HTTP_REQUEST_STOP, broken)
    try:
        transport, _, _ = make(ok(200))
        assert transport.request("GET", "/api/v1/x").status_code == 200
        assert not [h for h in telemetry.list_handlers() if h.id == "broken-http-handler"]
    finally:
        telemetry.detach("broken-http-handler")
