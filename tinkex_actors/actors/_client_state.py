"""What training and sampling clients keep outside their actors: closed flag, pending futures."""

from __future__ import annotations

from typing import Any

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
