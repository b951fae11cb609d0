"""Per-tenant resources: one connection pool, one worker pool, one sampling rate limiter.

A *tenant* is one :class:`~tinkex_actors.config.Config` (base URL, key and options). Every
ServiceClient of a tenant shares its :class:`Tenant`; different configs share nothing, so one
tenant's 429 back-off, slow server or crash never slows another. Tenants are reference
counted: the last ServiceClient to close shuts the worker pool down (joining its threads) and
releases the connection pool, so a closed client leaves no thread behind.

A ServiceClient built with an injected transport backend or ``sleep`` (tests: fault timing)
gets a private tenant of its own, never shared.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from tinkex_actors import _constants as c
from tinkex_actors.actors._pool import WorkerPool
from tinkex_actors.config import Config
from tinkex_actors.errors import ClientClosedError, TinkexTimeoutError
from tinkex_actors.transport import (
    Backend,
    HTTPTransport,
    acquire_transport,
    release_transport,
)

__all__ = ["RateLimiter", "Tenant", "TenantRegistry", "tenants"]

# Longest single wait while blocked on the in-flight bound (re-checks the throttle window).
_INFLIGHT_RECHECK = 0.25


class RateLimiter:
    """A tenant's sampling back-off (after a 429) and its bound on samples in flight.

    ``backoff_until`` and ``throttle_until`` are plain floats (``time.monotonic`` values) that
    senders read without a lock; writers take the lock. Thread-safe.

    Args:
        max_inflight: samples in flight at once, normally.
        max_throttled: the bound while a recent back-off's throttle window is open.
        clock: monotonic clock (tests may pass a fake).
    """

    __slots__ = (
        "_clock",
        "_cond",
        "_inflight",
        "backoff_until",
        "max_inflight",
        "max_throttled",
        "throttle_until",
    )

    def __init__(
        self,
        max_inflight: int,
        max_throttled: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_inflight = max_inflight
        self.max_throttled = max_throttled
        self.backoff_until = 0.0
        self.throttle_until = 0.0
        self._clock = clock
        self._inflight = 0
        self._cond = threading.Condition(threading.Lock())

    @property
    def inflight(self) -> int:
        """Samples in flight now."""
        return self._inflight

    def backoff_remaining(self) -> float:
        """Seconds until the back-off ends (0 when none is active). Lock-free."""
        until = self.backoff_until
        if not until:
            return 0.0
        return max(0.0, until - self._clock())

    def set_backoff(self, seconds: float) -> None:
        """A 429: every sender of the tenant waits ``seconds``; throttling follows."""
        until = self._clock() + seconds
        with self._cond:
            if until > self.backoff_until:
                self.backoff_until = until
                self.throttle_until = until + c.SAMPLE_THROTTLE_WINDOW

    def clear_backoff(self) -> None:
        """A success: the back-off ends (the throttle window stays open until it expires)."""
        if self.backoff_until:
            self.backoff_until = 0.0

    def limit(self) -> int:
        """The in-flight bound now (smaller inside a throttle window)."""
        if self.throttle_until and self._clock() < self.throttle_until:
            return self.max_throttled
        return self.max_inflight

    def acquire(self, deadline: float | None, is_closed: Callable[[], bool]) -> None:
        """Take one in-flight slot, waiting while the tenant is at its bound.

        Raises:
            TinkexTimeoutError: ``deadline`` (a monotonic time) passed while waiting.
            ClientClosedError: the client closed while waiting.
        """
        with self._cond:
            while self._inflight >= self.limit():
                if is_closed():
                    raise ClientClosedError("the client was closed while the sample waited")
                wait = _INFLIGHT_RECHECK
                if deadline is not None:
                    left = deadline - self._clock()
                    if left <= 0:
                        raise TinkexTimeoutError(
                            "the sample's timeout passed while waiting for an in-flight slot"
                        )
                    wait = min(wait, left)
                self._cond.wait(wait)
            self._inflight += 1

    def release(self) -> None:
        """Give a slot back."""
        with self._cond:
            self._inflight -= 1
            self._cond.notify()


class Tenant:
    """The shared resources of one Config: HTTP transport, worker pool, rate limiter.

    Attributes:
        config: the tenant's configuration.
        transport: its pooled HTTP transport.
        pool: its bounded worker pool (polling and sample dispatch), at most
            ``config.http_pool_size`` threads, so every worker can hold a pooled connection.
        limiter: its sampling back-off and in-flight bound.
        private: True for a tenant built around an injected backend (never shared).
    """

    def __init__(self, config: Config, transport: HTTPTransport, *, private: bool) -> None:
        self.config = config
        self.transport = transport
        self.private = private
        self.pool = WorkerPool(
            config.http_pool_size,
            name=f"tinkex-{config.tenant_id[:8]}",
            idle_timeout=c.WORKER_IDLE_TIMEOUT,
        )
        self.limiter = RateLimiter(config.sample_max_inflight, config.sample_max_inflight_throttled)
        self.holders = 1

    def close(self, timeout: float) -> None:
        """Stop the pool (joining its threads up to ``timeout``) and release the transport."""
        self.pool.shutdown(wait=True, timeout=timeout)
        if self.private:
            self.transport.close()
        else:
            release_transport(self.transport)

    def __repr__(self) -> str:
        return f"Tenant(tenant_id={self.config.tenant_id!r}, holders={self.holders})"


class TenantRegistry:
    """Hands out one :class:`Tenant` per Config, counting holders. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tenants: dict[Config, Tenant] = {}

    def acquire(
        self,
        config: Config,
        *,
        backend: Backend | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> Tenant:
        """The tenant of ``config`` (created on first use), with one more holder.

        With ``backend`` or ``sleep`` the tenant is private: its own transport around the
        injected backend, its own pool and limiter.
        """
        if backend is not None or sleep is not None:
            transport = HTTPTransport(config, backend=backend, sleep=sleep or time.sleep)
            return Tenant(config, transport, private=True)
        with self._lock:
            tenant = self._tenants.get(config)
            if tenant is not None:
                tenant.holders += 1
                return tenant
            tenant = Tenant(config, acquire_transport(config), private=False)
            self._tenants[config] = tenant
            return tenant

    def release(self, tenant: Tenant, timeout: float) -> None:
        """Drop one holder; the last one closes the tenant (bounded by ``timeout``)."""
        if tenant.private:
            tenant.close(timeout)
            return
        with self._lock:
            if self._tenants.get(tenant.config) is not tenant:
                return
            tenant.holders -= 1
            last = tenant.holders <= 0
            if last:
                del self._tenants[tenant.config]
        if last:
            tenant.close(timeout)

    def __len__(self) -> int:
        with self._lock:
            return len(self._tenants)


#: The process-wide registry the ServiceClients use.
tenants = TenantRegistry()
