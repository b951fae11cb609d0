"""Queue-state reporting: what the server says about a client's queue while it waits.

retrieve_future answers ``try_again`` with a ``queue_state`` (``active``,
``paused_rate_limit``, ``paused_capacity``) and an optional reason. Each client keeps one
:class:`QueueStateTracker`; it emits :data:`~tinkex_actors.telemetry.QUEUE_STATE_CHANGE`
when the (state, reason) pair changes and logs a WARNING for a paused state at most once per
``QUEUE_STATE_LOG_INTERVAL`` seconds per client.
"""

from __future__ import annotations

import threading
import time
from typing import Final, Literal

from tinkex_actors import telemetry
from tinkex_actors._constants import QUEUE_STATE_LOG_INTERVAL
from tinkex_actors._logging import get_logger

__all__ = ["ACTIVE", "QueueStateTracker"]

ACTIVE: Final = "active"
_DEFAULT_REASONS: Final = {
    "paused_rate_limit": {
        "training": "concurrent training clients rate limit hit",
        "sampling": "concurrent sampler weights limit hit",
    },
    "paused_capacity": {
        "training": "the server is running short on capacity, please wait",
        "sampling": "the server is running short on capacity, please wait",
    },
}


class QueueStateTracker:
    """The last queue state one client saw. Thread-safe; the unchanged path takes no lock.

    Args:
        kind: ``"training"`` or ``"sampling"`` (the event's ``client`` metadata).
        ident: the model id or sampler id (``id`` metadata).
        tenant_id: the tenant's one-way id.
    """

    __slots__ = ("_ident", "_kind", "_last", "_last_log", "_lock", "_tenant_id")

    def __init__(self, kind: Literal["training", "sampling"], ident: str, tenant_id: str) -> None:
        self._kind = kind
        self._ident = ident
        self._tenant_id = tenant_id
        self._last: tuple[str, str | None] = (ACTIVE, None)
        self._last_log = -float("inf")
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        """The last state seen (``active`` at first)."""
        return self._last[0]

    def rename(self, ident: str) -> None:
        """Set the id once it is known (a model id arrives after create_model)."""
        self._ident = ident

    def update(self, state: str, reason: str | None = None) -> None:
        """Record what the server said; report a change."""
        current = (state, reason)
        if current == self._last:  # the common case: nothing changed, no lock
            return
        with self._lock:
            previous = self._last
            if current == previous:
                return
            self._last = current
            now = time.monotonic()
            log_it = state != ACTIVE and now - self._last_log >= QUEUE_STATE_LOG_INTERVAL
            if log_it:
                self._last_log = now
        if telemetry.enabled(telemetry.QUEUE_STATE_CHANGE):
            telemetry.execute(
                telemetry.QUEUE_STATE_CHANGE,
                {"monotonic_time": time.monotonic_ns()},
                {
                    "queue_state": state,
                    "previous_state": previous[0],
                    "reason": reason,
                    "client": self._kind,
                    "id": self._ident,
                    "tenant_id": self._tenant_id,
                },
            )
        if log_it:
            shown = reason or _DEFAULT_REASONS.get(state, {}).get(self._kind, "unknown")
            get_logger("queue").warning(
                "tinkex.queue.paused",
                client=self._kind,
                id=self._ident,
                queue_state=state,
                reason=shown,
                tenant_id=self._tenant_id,
            )
