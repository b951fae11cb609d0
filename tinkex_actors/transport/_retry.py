"""When to retry an HTTP exchange, and how long to wait first (protocol §5.1, layer 1).

Retryable: connection errors, timeouts, and statuses 408, 409, 429 and >= 500, unless the
server says otherwise with ``x-should-retry: true|false``. The k-th retry (k from 0) waits
``retry-after-ms`` / ``retry-after`` when the server sends one in (0, 60] seconds, else
``min(0.5 * 2**k, 10) * (1 - 0.25 * U)`` seconds, ``U`` uniform in [0, 1).
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Mapping

import attrs

from tinkex_actors._constants import (
    HEADER_RETRY_AFTER,
    HEADER_RETRY_AFTER_MS,
    HEADER_SHOULD_RETRY,
    RETRY_AFTER_MAX,
    RETRY_INITIAL_DELAY,
    RETRY_JITTER,
    RETRY_MAX_DELAY,
    RETRYABLE_STATUS,
    RETRYABLE_STATUS_FLOOR,
)

__all__ = ["RetryPolicy"]


@attrs.frozen
class RetryPolicy:
    """The transport's retry decision and back-off (immutable, shareable between threads).

    Attributes:
        initial_delay: delay before the first retry, before jitter (seconds).
        max_delay: cap of the doubling delay (seconds).
        jitter: each back-off is multiplied by a factor in ``(1 - jitter, 1]``.
        retry_after_max: server-requested delays are honoured only up to this (seconds).
    """

    initial_delay: float = RETRY_INITIAL_DELAY
    max_delay: float = RETRY_MAX_DELAY
    jitter: float = RETRY_JITTER
    retry_after_max: float = RETRY_AFTER_MAX

    def should_retry(self, status: int, headers: Mapping[str, str]) -> bool:
        """Whether a non-2xx ``status`` is worth retrying (``x-should-retry`` wins)."""
        flag = headers.get(HEADER_SHOULD_RETRY)
        if flag is not None:
            flag = flag.strip().lower()
            if flag == "true":
                return True
            if flag == "false":
                return False
        return status in RETRYABLE_STATUS or status >= RETRYABLE_STATUS_FLOOR

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

    def delay(self, attempt: int, headers: Mapping[str, str], uniform: float, now: float) -> float:
        """The wait before retry ``attempt``: the server's request if valid, else back-off."""
        requested = self.retry_after(headers, now)
        return requested if requested is not None else self.backoff(attempt, uniform)


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
