"""Per-tenant resources: one connection pool and the thread lanes every client shares.

A *tenant* is one :class:`~tinkex_actors.config.Config` (base URL, key and options). Every
ServiceClient of a tenant shares its :class:`Tenant`; different configs share no pool or
thread, so one tenant's slow server or burst never delays another. The sampling back-off is
the exception, by design: it belongs to the API key the server rate-limits, so it is shared
by every tenant on that key (:mod:`~tinkex_actors.actors._key_limits`).

Lanes (bounded :class:`WorkerPool` s, threads started on demand and retired when idle):

* ``sampling``: submits samples and fetches their results. A sample in flight holds no
  thread: its completion is reported by its sampling session's batched poll.
* ``polls``: single ``retrieve_future`` long polls of samples, only for servers that do not
  offer batched polling (each pending sample then needs its own outstanding poll).
* ``pool``: the rest (telemetry uploads, capability lookups).

Training clients have a lane of their own each (see ``_training``), so their results never
wait behind sampling work. Tenants are reference counted: the last ServiceClient to close
shuts the lanes down and releases the connection pool, so a closed client leaves no thread.

A ServiceClient built with an injected transport backend or ``sleep`` (tests: fault timing)
gets a private tenant of its own, never shared.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from tinkex_actors import _constants as c
from tinkex_actors.actors._key_limits import KeyLimiter, key_limiters
from tinkex_actors.actors._pool import WorkerPool
from tinkex_actors.actors._timers import Deadlines
from tinkex_actors.config import Config
from tinkex_actors.transport import (
    Backend,
    HTTPTransport,
    acquire_transport,
    release_transport,
)

__all__ = ["Tenant", "TenantRegistry", "tenants"]


class Tenant:
    """The shared resources of one Config: HTTP transport, thread lanes, deadlines.

    Attributes:
        config: the tenant's configuration.
        transport: its pooled HTTP transport.
        pool: general work (telemetry uploads, capability lookups).
        sampling: submits samples and fetches their results
            (``config.sample_dispatch_threads`` threads at most).
        polls: single long polls of samples for servers without batched polling
            (``config.poll_threads`` threads at most).
        deadlines: runs sample timeouts from one thread.
        limiter: the sampling back-off of the tenant's API key (shared across tenants).
        private: True for a tenant built around an injected backend (never shared).
    """

    def __init__(self, config: Config, transport: HTTPTransport, *, private: bool) -> None:
        self.config = config
        self.transport = transport
        self.private = private
        name = f"tinkex-{config.tenant_id[:8]}"
        idle = c.WORKER_IDLE_TIMEOUT
        self.pool = WorkerPool(c.TENANT_POOL_WORKERS, name=name, idle_timeout=idle)
        self.sampling = WorkerPool(
            config.sample_dispatch_threads, name=f"{name}-sample", idle_timeout=idle
        )
        self.polls = WorkerPool(config.poll_threads, name=f"{name}-poll", idle_timeout=idle)
        self.deadlines = Deadlines(f"{name}-deadlines", idle_timeout=idle)
        self.limiter: KeyLimiter = key_limiters.acquire(config)
        self.holders = 1

    def lanes(self) -> tuple[WorkerPool, ...]:
        """Every thread lane of the tenant."""
        return (self.pool, self.sampling, self.polls)

    def close(self, timeout: float) -> None:
        """Stop the lanes (cutting their HTTP exchanges short, joining their threads up to
        ``timeout``) and release the transport."""
        deadline = time.monotonic() + timeout
        threads: set[int] = set()
        for lane in self.lanes():
            lane.shutdown(wait=False)
            threads |= lane.thread_idents()
        self.deadlines.shutdown()
        self.transport.interrupt(threads)
        for lane in self.lanes():
            lane.shutdown(wait=True, timeout=max(0.0, deadline - time.monotonic()))
        key_limiters.release(self.limiter)
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
        injected backend, its own lanes.
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

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's tenants (their threads did not survive the
        fork, and a lock may have been copied held). Called by ``actors._fork``."""
        self._lock = threading.Lock()
        self._tenants = {}


#: The process-wide registry the ServiceClients use.
tenants = TenantRegistry()
