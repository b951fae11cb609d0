"""Per-tenant rate limits on ``asample`` (``--rate-limit KEY=N``).

Each limited tenant has a token bucket holding at most ``N`` tokens (one second's worth) and
refilled at ``N`` tokens per second; a sample request takes one token or is answered 429
with ``retry-after`` / ``retry-after-ms`` saying when the next token arrives. Tenants without
a limit are never counted, so a throttled tenant never slows the others. The limiter is used
only from the server's event loop, so it takes no lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from tinkex_actors.server.auth import tenant_id

__all__ = ["SampleRateLimiter"]


class _Bucket:
    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = now


class SampleRateLimiter:
    """Token buckets keyed by tenant.

    Args:
        rates: requests per second by API key (the keys are hashed to tenant ids at once).
        clock: a monotonic clock in seconds (for tests).
    """

    def __init__(
        self, rates: Mapping[str, float], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        now = clock()
        self._buckets = {tenant_id(key): _Bucket(rate, now) for key, rate in rates.items()}

    def admit(self, tenant: str) -> float:
        """Take one token for ``tenant``: 0.0 when admitted, else the seconds to wait."""
        bucket = self._buckets.get(tenant)
        if bucket is None:
            return 0.0
        now = self._clock()
        bucket.tokens = min(bucket.capacity, bucket.tokens + (now - bucket.stamp) * bucket.rate)
        bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / bucket.rate

    def __len__(self) -> int:
        return len(self._buckets)

    def __repr__(self) -> str:
        return f"SampleRateLimiter(<{len(self._buckets)} limited tenants>)"
