"""What training and sampling clients keep outside their actors: closed flag, pending futures,
the threads working for them (so that closing can cut their long polls short)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from tinkex_actors._logging import get_logger
from tinkex_actors.actors._base import ActorHandle
from tinkex_actors.actors._runtime import Runtime
from tinkex_actors.errors import TinkexError
from tinkex_actors.futures import ActorFuture

__all__ = ["ClientState"]


class ClientState:
    """A child client's state that outlives actor restarts.

    Attributes:
        runtime: the ServiceClient tree's context.
        handle: the handle of the client's actor.
        pending: futures of calls not yet complete (failed with ClientClosedError on close).
        closed: set once the client closed.
    """

    def __init__(self, runtime: Runtime, handle: ActorHandle) -> None:
        self.runtime = runtime
        self.handle = handle
        self.pending: set[ActorFuture[Any]] = set()
        self.closed = False
        self._closed_event = threading.Event()
        # Threads blocked in an HTTP exchange for this client, and how many times each.
        self._blocked: dict[int, int] = {}
        self._blocked_lock = threading.Lock()

    def is_closed(self) -> bool:
        """Whether this client (or its ServiceClient) closed."""
        return self.closed or self.runtime.closed

    def track(self, future: ActorFuture[Any]) -> None:
        """Remember ``future`` until it completes (close() fails what is left)."""
        pending = self.pending
        pending.add(future)
        future.add_done_callback(pending.discard)

    def fail_pending(self, error: TinkexError) -> None:
        """Fail every pending future with ``error``."""
        for future in self.pending.copy():
            future.set_exception(error)

    def wait(self, seconds: float) -> bool:
        """Wait ``seconds``, cut short when the client closes; True when it closed.

        Tests that inject the tree's ``sleep`` get it called instead (no real wait).
        """
        if self.runtime.injected_sleep is not None:
            self.runtime.injected_sleep(seconds)
        elif seconds > 0:
            self._closed_event.wait(seconds)
        return self.is_closed()

    @contextlib.contextmanager
    def blocking(self) -> Iterator[None]:
        """Mark the calling thread as working for this client while the block runs: closing
        the client shuts down the connection it is blocked on (see :meth:`interrupt`)."""
        me = threading.get_ident()
        with self._blocked_lock:
            self._blocked[me] = self._blocked.get(me, 0) + 1
        try:
            yield
        finally:
            with self._blocked_lock:
                left = self._blocked[me] - 1
                if left:
                    self._blocked[me] = left
                else:
                    del self._blocked[me]

    def log_ids(self) -> dict[str, str]:
        """The ids that name this client in a log line (a model id, a sampler id)."""
        return {}

    def logger(self, name: str) -> Any:
        """A structlog logger bound to what a daemon's operator needs to place a line: the
        tenant (a one-way id, never the key), the session and this client's own id. Bound
        when a line is logged (the session and ids may change: recovery, creation)."""
        return get_logger(name).bind(
            tenant_id=self.runtime.config.tenant_id,
            session_id=self.runtime.session_id,
            **self.log_ids(),
        )

    def threads(self) -> list[threading.Thread]:
        """Threads of this client's own besides its actor's (joined when the tree closes)."""
        return []

    def retire_threads(self) -> None:
        """The client is forgotten (released, or failed for good): let its own threads end
        once their current work is done."""

    def mark_closed(self) -> None:
        """Set the closed flag, wake this client's waits and cut its threads' exchanges."""
        self.closed = True
        self._closed_event.set()
        with self._blocked_lock:
            threads = set(self._blocked)
        self.runtime.transport.interrupt(threads)
