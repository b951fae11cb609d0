"""Deadlines without a thread each: one daemon thread per tenant runs callbacks when due.

A sample's ``timeout`` must fail its future on time even while nothing is working on it (it
waits in the in-flight queue, or for its completion to be reported by the session's batched
poll). :class:`Deadlines` keeps the callbacks in the standard library's :mod:`sched` queue
(a heap, thread-safe to add to and cancel from) and runs them from one thread, started on
first use and retired after ``idle_timeout`` seconds with nothing scheduled.

Callbacks run in that thread: they must be short and must not block (completing a future,
queueing work on a pool).
"""

from __future__ import annotations

import contextlib
import itertools
import sched
import threading
import time
from collections.abc import Callable

from tinkex_actors._logging import get_logger

__all__ = ["Deadlines"]

_ids = itertools.count(1)


class Deadlines:
    """Run callbacks at ``time.monotonic()`` deadlines from one lazily started thread.

    Thread-safe: any thread may schedule and cancel.
    """

    def __init__(self, name: str, *, idle_timeout: float) -> None:
        self._name = f"{name}-{next(_ids)}"
        self._idle_timeout = idle_timeout
        self._wake = threading.Event()
        self._queue = sched.scheduler(time.monotonic, self._delay)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def schedule(self, when: float, callback: Callable[[], object]) -> sched.Event:
        """Run ``callback()`` at the monotonic time ``when``; returns a handle to cancel."""
        event = self._queue.enterabs(when, 0, self._guarded, (callback,))
        with self._lock:
            if self._closed:
                self.cancel(event)
                return event
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
        self._wake.set()  # the new deadline may come before the one being waited for
        return event

    def cancel(self, event: sched.Event) -> None:
        """Forget a scheduled callback (nothing happens if it already ran)."""
        with contextlib.suppress(ValueError):
            self._queue.cancel(event)

    def shutdown(self) -> None:
        """Drop every pending callback and stop the thread (not joined: it exits at once)."""
        with self._lock:
            self._closed = True
            thread = self._thread
        for event in self._queue.queue:
            self.cancel(event)
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(1.0)

    # ---------------------------------------------------------------- internals
    def _delay(self, seconds: float) -> None:
        # sched calls this to wait for the next deadline; a new earlier one (or shutdown)
        # wakes it up early, and sched then looks at its queue again.
        if seconds > 0:
            self._wake.wait(seconds)
            self._wake.clear()

    def _run(self) -> None:
        woken = True
        while not self._retire(woken):
            self._queue.run(blocking=True)
            # Queue empty: wait for new work, retire when idle too long.
            woken = self._closed or self._wake.wait(self._idle_timeout)
            self._wake.clear()

    def _retire(self, woken: bool) -> bool:
        # Under the lock, so that schedule() either sees this thread gone or its work seen.
        with self._lock:
            if self._closed or (not woken and self._queue.empty()):
                self._thread = None
                return True
            return False

    @staticmethod
    def _guarded(callback: Callable[[], object]) -> None:
        try:
            callback()
        except Exception as exc:  # a failing callback must not stop the other deadlines
            get_logger("timers").error(
                "tinkex.timers.callback_failed", error=f"{type(exc).__name__}: {exc}"[:300]
            )
