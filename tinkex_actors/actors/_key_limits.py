"""The sampling back-off of one API key on one server, shared by every client using it.

A server rate-limits a key, not a ``Config``: two ServiceClients on the same (base URL, API
key) with different tags, metadata or timeouts are different tenants (separate pools), yet
a 429 answered to one must slow both. :class:`KeyLimiter` holds that key's back-off deadline
and the throttle window that follows it (protocol §5.2: after a 429 every sender waits 1 s,
5 s for prompts over 128 KiB; for the next 10 s at most ``sample_max_inflight_throttled``
dispatches run at once). :data:`key_limiters` hands out one per key, reference counted.

``backoff_until`` and ``throttle_until`` are plain floats (``time.monotonic`` values) that
senders read without a lock; writers take the lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from tinkex_actors import _constants as c
from tinkex_actors.config import Config
from tinkex_actors.errors import ClientClosedError, TinkexTimeoutError

__all__ = ["KeyLimiter", "KeyLimiterRegistry", "key_limiters"]

# Longest single wait for a dispatch slot before the throttle window is looked at again.
_RECHECK = 0.25


class KeyLimiter:
    """One key's 429 back-off and throttle window. Thread-safe.

    Args:
        max_throttled: dispatches at once while the throttle window is open.
        clock: monotonic clock (tests may pass a fake).
    """

    __slots__ = (
        "_clock",
        "_cond",
        "_dispatching",
        "backoff_until",
        "holders",
        "key",
        "max_throttled",
        "throttle_until",
    )

    def __init__(
        self,
        key: tuple[str, str],
        max_throttled: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.key = key
        self.max_throttled = max_throttled
        self.backoff_until = 0.0
        self.throttle_until = 0.0
        self.holders = 0
        self._clock = clock
        self._dispatching = 0
        self._cond = threading.Condition(threading.Lock())

    def set_backoff(self, seconds: float) -> None:
        """A 429: every sender of the key waits ``seconds``; the throttle window follows."""
        until = self._clock() + seconds
        with self._cond:
            if until > self.backoff_until:
                self.backoff_until = until
                self.throttle_until = until + c.SAMPLE_THROTTLE_WINDOW

    def clear_backoff(self) -> None:
        """A success: the back-off ends (the throttle window stays open until it expires)."""
        if self.backoff_until:
            self.backoff_until = 0.0

    def throttled(self) -> bool:
        """Whether the throttle window after a back-off is open now."""
        return bool(self.throttle_until) and self._clock() < self.throttle_until

    def wait_backoff(self, deadline: float | None, wait: Callable[[float], bool]) -> None:
        """Wait until the key's back-off ends.

        Args:
            deadline: a monotonic time the caller must not wait past.
            wait: sleeps a number of seconds; returns True when the caller's client closed.

        Raises:
            TinkexTimeoutError: ``deadline`` comes before the back-off ends.
            ClientClosedError: the client closed while waiting.
        """
        while True:
            until = self.backoff_until
            now = self._clock()
            if not until or until <= now:
                return
            if deadline is not None and deadline <= now:
                raise TinkexTimeoutError("the sample's timeout passed during the 429 back-off")
            stop = until if deadline is None else min(until, deadline)
            if wait(stop - now):
                raise ClientClosedError("the client was closed while the sample backed off")

    def enter_dispatch(self, deadline: float | None, is_closed: Callable[[], bool]) -> None:
        """Count one dispatch in, waiting while the throttle window's bound is reached.

        Raises:
            TinkexTimeoutError: ``deadline`` passed while waiting.
            ClientClosedError: the client closed while waiting.
        """
        with self._cond:
            while self.throttled() and self._dispatching >= self.max_throttled:
                if is_closed():
                    raise ClientClosedError("the client was closed while the sample waited")
                wait = _RECHECK
                if deadline is not None:
                    left = deadline - self._clock()
                    if left <= 0:
                        raise TinkexTimeoutError(
                            "the sample's timeout passed while dispatches were throttled"
                        )
                    wait = min(wait, left)
                self._cond.wait(wait)
            self._dispatching += 1

    def leave_dispatch(self) -> None:
        """Count one dispatch out."""
        with self._cond:
            self._dispatching -= 1
            self._cond.notify()


class KeyLimiterRegistry:
    """One :class:`KeyLimiter` per (base URL, key fingerprint), counting holders. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._limiters: dict[tuple[str, str], KeyLimiter] = {}

    def acquire(self, config: Config) -> KeyLimiter:
        """The limiter of ``config``'s key and server, with one more holder."""
        key = config.tenant_key
        with self._lock:
            limiter = self._limiters.get(key)
            if limiter is None:
                limiter = KeyLimiter(key, config.sample_max_inflight_throttled)
                self._limiters[key] = limiter
            limiter.holders += 1
            return limiter

    def release(self, limiter: KeyLimiter) -> None:
        """Drop one holder; the last one forgets the limiter."""
        with self._lock:
            limiter.holders -= 1
            if limiter.holders <= 0 and self._limiters.get(limiter.key) is limiter:
                del self._limiters[limiter.key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._limiters)

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's limiters (their counts are the parent's
        requests in flight). Called by ``actors._fork``."""
        self._lock = threading.Lock()
        self._limiters = {}


#: The process-wide registry the tenants use.
key_limiters = KeyLimiterRegistry()
