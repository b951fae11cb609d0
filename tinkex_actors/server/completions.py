"""Completion logs: what ``retrieve_futures`` reports, per sampling session and clone.

Every ``asample`` of a sampling session is recorded in the log of its *target*, the pair
``(sampling_session_id, seq_id // SAMPLE_SEQ_ID_STRIDE)`` (the clone id an official 0.38
``SamplingClient`` polls for). When the sample finishes or fails, the log gets an entry
``(cursor, record)``; a poll returns the entries past the cursor the client sends back.

Cursors come from one counter per server process, starting at the boot time in
microseconds: they grow across logs and across restarts, so a cursor from before a restart
is recognisably older than every cursor of this run (the log is then reported from its start
instead of being mistaken for "already seen"), and a cursor above the counter is a client
error.

Entries leave a log when a poll's ``prev_cursor`` passes them, when the client acknowledges
their request ids (``retrieved_request_ids``), or when the future itself is swept (the
future retention of :mod:`tinkex_actors.server.pending`), so a session that never polls
holds no more than the futures do. A log with nothing in it, no request still to report and
no poll waiting, untouched for ``idle_ttl``, is dropped (a log still expecting completions
never is: they would land in a log no poll finds).

Everything here runs on the event loop: no locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tinkex_actors.server.pending import PendingRequest

__all__ = ["CompletionLog", "CompletionLogs", "LogKey"]

#: ``(sampling_session_id, cloned_sampler_id)``.
LogKey = tuple[str, int]


class CompletionLog:
    """The finished and failed requests of one target, in completion order."""

    __slots__ = ("_event", "closed", "entries", "key", "pending", "tenant", "touched", "waiters")

    def __init__(self, key: LogKey, tenant: str, now: float) -> None:
        self.key = key
        self.tenant = tenant
        #: request id -> (cursor, record), oldest first.
        self.entries: OrderedDict[str, tuple[int, PendingRequest]] = OrderedDict()
        self.closed = False
        self.touched = now
        self.waiters = 0
        #: Requests that will be reported here and have not completed yet: while there are
        #: any, the log must stay the one polls find, however long they take.
        self.pending = 0
        self._event: asyncio.Event | None = None

    def append(self, cursor: int, record: PendingRequest) -> None:
        """Record a finished request and wake the polls waiting for one."""
        if self.closed:
            return
        self.entries[record.request_id] = (cursor, record)
        self.wake()

    def trim(self, cursor: int) -> None:
        """Forget the entries at or before ``cursor`` (the client has seen them)."""
        entries = self.entries
        while entries:
            first = next(iter(entries.values()))
            if first[0] > cursor:
                return
            entries.popitem(last=False)

    def discard(self, request_id: str) -> None:
        """Forget one entry (acknowledged or swept)."""
        self.entries.pop(request_id, None)

    def after(self, cursor: int, limit: int) -> Iterator[tuple[int, PendingRequest]]:
        """Up to ``limit`` entries past ``cursor``, oldest first."""
        count = 0
        for entry in self.entries.values():
            if count >= limit:
                return
            if entry[0] > cursor:
                count += 1
                yield entry

    async def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the next entry (or :meth:`close`)."""
        if self._event is None:
            self._event = asyncio.Event()
        event = self._event
        self.waiters += 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
        finally:
            self.waiters -= 1

    def close(self) -> None:
        """The session ended: drop the entries and release every poll."""
        self.closed = True
        self.entries.clear()
        self.wake()

    def wake(self) -> None:
        """Release the polls waiting now (they answer with what the log holds)."""
        # Waiters hold the current event; the next wait gets a fresh one.
        event, self._event = self._event, None
        if event is not None:
            event.set()


class CompletionLogs:
    """Every target's log, plus the cursor counter they share.

    Args:
        idle_ttl: an empty log nobody polled or appended to for this long is dropped.
        clock: monotonic seconds (tests move it).
    """

    def __init__(self, idle_ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._logs: dict[LogKey, CompletionLog] = {}
        self._idle_ttl = idle_ttl
        self._clock = clock
        #: The first cursor of this process: later than any earlier run's (see the module doc).
        self.first_cursor = time.time_ns() // 1000
        self._cursor = self.first_cursor

    @property
    def last_cursor(self) -> int:
        """The newest cursor handed out (``first_cursor`` before the first completion)."""
        return self._cursor

    def open(self, key: LogKey, tenant: str) -> CompletionLog:
        """The target's log, created when missing (a poll or a new request keeps it alive)."""
        now = self._clock()
        log = self._logs.get(key)
        if log is None or log.closed:
            log = CompletionLog(key, tenant, now)
            self._logs[key] = log
        log.touched = now
        return log

    def get(self, key: LogKey) -> CompletionLog | None:
        """The target's log, if any."""
        return self._logs.get(key)

    def record(self, log: CompletionLog, record: PendingRequest, *, report: bool = True) -> None:
        """One of ``log``'s pending requests completed: append it under the next cursor
        (unless ``report`` is false: the future is already gone)."""
        log.pending -= 1
        if log.closed or not report:
            return
        self._cursor += 1
        log.touched = self._clock()
        log.append(self._cursor, record)

    def close_prefix(self, prefix: str) -> None:
        """Close every log of the sampling sessions whose id starts with ``prefix`` (those of
        a finished session: ``{session_id}:sample:``)."""
        for key in [k for k in self._logs if k[0].startswith(prefix)]:
            self._logs.pop(key).close()

    def close_all(self) -> None:
        """Release every poll (server shutdown)."""
        for log in self._logs.values():
            log.wake()

    def sweep(self) -> int:
        """Drop the idle empty logs (nothing held, pending or waiting); returns how many."""
        cutoff = self._clock() - self._idle_ttl
        idle = [
            key
            for key, log in self._logs.items()
            if not (log.entries or log.pending or log.waiters) and log.touched < cutoff
        ]
        for key in idle:
            del self._logs[key]
        return len(idle)

    def __len__(self) -> int:
        return len(self._logs)

    def entry_count(self) -> int:
        """Entries held over every log."""
        return sum(len(log.entries) for log in self._logs.values())
