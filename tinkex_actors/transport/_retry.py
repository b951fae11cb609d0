"""The one retry policy: when to try an exchange again, and how long to wait first.

Every retrying caller goes through :func:`call_with_retries` with a :class:`RetryPolicy`:
the transport (each HTTP call), streamed downloads, REST calls, sample and training
submissions. The future poller keeps the protocol's polling rules (§3.7) but draws its
back-off from :data:`POLL_POLICY`.

The default rules (protocol §5.1, with one deliberate difference):

* Retryable: connection errors and timeouts, and the statuses 408, 429 and >= 500. **409 is
  not retried** (a conflict does not go away by asking again), unlike the official SDK's
  transport, unless the server says ``x-should-retry: true``.
* ``x-should-retry: true|false`` on an answer overrides the status rule either way.
* The wait before retry ``k`` (from 0) is the server's ``retry-after-ms`` / ``retry-after``
  (seconds or an HTTP date) when it lies in (0, ``retry_after_max``], else
  ``min(initial_delay * 2**k, max_delay) * (1 - jitter * U)``, ``U`` uniform in [0, 1).
* An optional deadline (a ``time.monotonic()`` value): no retry is scheduled whose wait would
  end after it; the last failure is raised instead.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Callable, Mapping
from typing import Final, TypeVar

import attrs

from tinkex_actors._constants import (
    HEADER_RETRY_AFTER,
    HEADER_RETRY_AFTER_MS,
    HEADER_SHOULD_RETRY,
    POLL_BACKOFF_INITIAL,
    POLL_BACKOFF_MAX,
    RETRY_AFTER_MAX,
    RETRY_INITIAL_DELAY,
    RETRY_JITTER,
    RETRY_MAX_DELAY,
    RETRYABLE_STATUS,
    RETRYABLE_STATUS_FLOOR,
)
from tinkex_actors.errors import APIConnectionError, APIError, APIStatusError

__all__ = ["POLL_POLICY", "RetryPolicy", "call_with_retries"]

T = TypeVar("T")

#: ``on_retry(attempt, error, delay)``: told before each wait (logging, telemetry).
OnRetry = Callable[[int, APIError, float], None]


@attrs.frozen
class RetryPolicy:
    """Which failures to retry and how long to wait (immutable, shareable between threads).

    Attributes:
        initial_delay: delay before the first retry, before jitter (seconds).
        max_delay: cap of the doubling delay (seconds).
        jitter: each back-off is multiplied by a factor in ``(1 - jitter, 1]``.
        retry_after_max: server-requested delays are honoured only up to this (seconds).
        retry_statuses: statuses below 500 that are retried (>= 500 always are).
        status_delays: a fixed wait for some statuses instead of the doubling back-off (the
            server's shorter ``retry-after`` still wins), e.g. ``{503: 30.0}`` for a resource
            that is being prepared.
    """

    initial_delay: float = RETRY_INITIAL_DELAY
    max_delay: float = RETRY_MAX_DELAY
    jitter: float = RETRY_JITTER
    retry_after_max: float = RETRY_AFTER_MAX
    retry_statuses: frozenset[int] = RETRYABLE_STATUS
    status_delays: Mapping[int, float] = attrs.field(factory=dict, hash=False)

    def should_retry(self, status: int, headers: Mapping[str, str]) -> bool:
        """Whether a non-2xx ``status`` is worth retrying (``x-should-retry`` wins)."""
        flag = headers.get(HEADER_SHOULD_RETRY)
        if flag is not None:
            flag = flag.strip().lower()
            if flag == "true":
                return True
            if flag == "false":
                return False
        return status in self.retry_statuses or status >= RETRYABLE_STATUS_FLOOR

    def retryable(self, error: APIError) -> bool:
        """Whether ``error`` is worth retrying: a network failure, or a retryable status."""
        if isinstance(error, APIStatusError):
            return self.should_retry(error.status_code, error.headers)
        return isinstance(error, APIConnectionError)

    def backoff(self, attempt: int, uniform: float) -> float:
        """Jittered exponential delay before retry number ``attempt`` (0-based).

        Args:
            attempt: retries already taken.
            uniform: a number in [0, 1) (``random.random()``); 0 gives the full delay.
        """
        base = min(self.initial_delay * 2.0 ** min(attempt, 62), self.max_delay)
        return base * (1.0 - self.jitter * uniform)

    def retry_after(self, headers: Mapping[str, str], now: float) -> float | None:
        """The server-requested delay in seconds, when present and in (0, retry_after_max].

        ``retry-after-ms`` (milliseconds) is read first, then ``retry-after`` (seconds or an
        HTTP date, measured from ``now``, a POSIX time).
        """
        seconds: float | None = None
        raw_ms = headers.get(HEADER_RETRY_AFTER_MS)
        if raw_ms is not None:
            seconds = _number(raw_ms)
            seconds = None if seconds is None else seconds / 1000.0
        if seconds is None:
            raw = headers.get(HEADER_RETRY_AFTER)
            if raw is not None:
                seconds = _number(raw)
                if seconds is None:
                    seconds = _http_date(raw, now)
        if seconds is None or not 0.0 < seconds <= self.retry_after_max:
            return None
        return seconds

    def delay(
        self, attempt: int, headers: Mapping[str, str] | None, uniform: float, now: float
    ) -> float:
        """The wait before retry ``attempt``: the server's request if valid, else back-off."""
        if headers is not None:
            requested = self.retry_after(headers, now)
            if requested is not None:
                return requested
        return self.backoff(attempt, uniform)

    def delay_for(self, error: APIError, attempt: int, uniform: float, now: float) -> float:
        """The wait before retrying ``error`` (a retryable one) as retry number ``attempt``."""
        if isinstance(error, APIStatusError):
            fixed = self.status_delays.get(error.status_code)
            requested = self.retry_after(error.headers, now)
            if fixed is not None:
                return fixed if requested is None else min(requested, fixed)
            if requested is not None:
                return requested
        return self.backoff(attempt, uniform)


#: The future poller's back-off after connection failures and 429s: 1, 2, 4, ... 30 s,
#: jittered like every other back-off (protocol §3.7).
POLL_POLICY: Final = RetryPolicy(initial_delay=POLL_BACKOFF_INITIAL, max_delay=POLL_BACKOFF_MAX)


def call_with_retries(
    operation: Callable[[int], T],
    *,
    policy: RetryPolicy,
    max_retries: int,
    sleep: Callable[[float], object] = time.sleep,
    deadline: float | None = None,
    on_retry: OnRetry | None = None,
    uniform: Callable[[], float] = random.random,
    wall_clock: Callable[[], float] = time.time,
) -> T:
    """Run ``operation(attempt)`` until it returns, retrying retryable API errors.

    Args:
        operation: one attempt; receives the number of retries already taken (0 first).
            It raises :class:`~tinkex_actors.errors.APIError` subclasses for failures;
            anything else propagates at once.
        policy: what to retry and how long to wait.
        max_retries: retries allowed after the first attempt.
        sleep: waits a delay; a return value of True means "stop" (the client closed) and
            the last failure is raised.
        deadline: a ``time.monotonic()`` time; no wait is started that would end after it.
        on_retry: told ``(attempt, error, delay)`` before each wait.
        uniform: jitter draws in [0, 1).
        wall_clock: POSIX time, to read ``retry-after`` HTTP dates.

    Returns:
        What the first successful attempt returned.

    Raises:
        APIError: the last attempt's failure (not retryable, retries used up, or the
            deadline would pass).
    """
    attempt = 0
    while True:
        try:
            return operation(attempt)
        except APIError as error:
            if attempt >= max_retries or not policy.retryable(error):
                raise
            delay = policy.delay_for(error, attempt, uniform(), wall_clock())
            if deadline is not None and time.monotonic() + delay > deadline:
                raise
            if on_retry is not None:
                on_retry(attempt, error, delay)
            if sleep(delay) is True:
                raise
        attempt += 1


def _number(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _http_date(text: str, now: float) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return when.timestamp() - now
