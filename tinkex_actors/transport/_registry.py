"""One shared transport per tenant: reference-counted, so the last client closes the pool.

Equal configs (``Config`` is hashable) share one :class:`HTTPTransport` and so one connection
pool; different configs never share one. Clients ``acquire`` a transport when they start and
``release`` it when they close; the pool closes when the last holder releases it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from tinkex_actors.config import Config
from tinkex_actors.errors import ValidationError
from tinkex_actors.transport._http import HTTPTransport

__all__ = ["TransportRegistry", "acquire_transport", "release_transport", "shared_transports"]


class TransportRegistry:
    """Hands out one :class:`HTTPTransport` per Config, counting holders. Thread-safe.

    Args:
        factory: builds a transport for a config (default :class:`HTTPTransport`); tests pass
            one that injects a fake backend.
    """

    def __init__(self, factory: Callable[[Config], HTTPTransport] = HTTPTransport) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._entries: dict[Config, tuple[HTTPTransport, int]] = {}

    def acquire(self, config: Config) -> HTTPTransport:
        """Return the tenant's transport (creating it on first use) and count one holder."""
        if not isinstance(config, Config):
            raise ValidationError(f"expected a Config, got {type(config).__name__}", field="config")
        with self._lock:
            entry = self._entries.get(config)
            if entry is None:
                transport = self._factory(config)
                self._entries[config] = (transport, 1)
                return transport
            self._entries[config] = (entry[0], entry[1] + 1)
            return entry[0]

    def release(self, transport: HTTPTransport) -> None:
        """Drop one holder of ``transport``; close it when none is left.

        Releasing a transport that this registry does not hold (or no longer holds) does
        nothing, so a double release is harmless.
        """
        to_close: HTTPTransport | None = None
        with self._lock:
            entry = self._entries.get(transport.config)
            if entry is None or entry[0] is not transport:
                return
            if entry[1] <= 1:
                del self._entries[transport.config]
                to_close = transport
            else:
                self._entries[transport.config] = (transport, entry[1] - 1)
        if to_close is not None:
            to_close.close()

    def holders(self, config: Config) -> int:
        """How many holders the transport of ``config`` has (0 when there is none)."""
        with self._lock:
            entry = self._entries.get(config)
            return 0 if entry is None else entry[1]

    def close_all(self) -> None:
        """Close every transport and forget them (for tests and interpreter exit)."""
        with self._lock:
            transports = [t for t, _ in self._entries.values()]
            self._entries.clear()
        for transport in transports:
            transport.close()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's transports (a lock may have been copied held;
        the child builds its own). Called by ``actors._fork``."""
        self._lock = threading.Lock()
        self._entries = {}


#: The process-wide registry the clients use.
shared_transports = TransportRegistry()


def acquire_transport(config: Config) -> HTTPTransport:
    """Acquire the process-wide shared transport of ``config`` (see :class:`TransportRegistry`)."""
    return shared_transports.acquire(config)


def release_transport(transport: HTTPTransport) -> None:
    """Release a transport obtained from :func:`acquire_transport`."""
    shared_transports.release(transport)
