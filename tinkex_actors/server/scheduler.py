"""Runs engine work on worker threads: per model one at a time, in ``seq_id`` order.

Each model has a *lane*. A lane runs its jobs one after another on the worker pool, picking
the job whose ``seq_id`` is the next after the last one run, then jobs without a ``seq_id``
(in arrival order). A job whose ``seq_id`` is behind (already passed) runs at once. When the
next ``seq_id`` is missing, later ones wait up to ``gap_timeout`` seconds; after that the lane
proceeds with the smallest waiting one and logs a warning, so a lost request never wedges a
model. A ``seq_id`` whose request was rejected (answered 4xx, so it never became a job) is
*consumed* (:meth:`Scheduler.consume`): the lane steps over it at once instead of waiting, since
clients never send a ``seq_id`` again once it was answered (protocol §5.5). Jobs without a lane
(sampling) run concurrently. Nothing runs until the engine is ready.

Engine calls never run on the event loop; the loop is used only to arm gap timers.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tinkex_actors._logging import get_logger
from tinkex_actors.errors import APIStatusError, RequestErrorCategory
from tinkex_actors.server.engine_api import EngineNotFoundError, EngineUserError
from tinkex_actors.server.http_errors import conflict
from tinkex_actors.server.pending import PendingRequest

__all__ = ["Job", "Scheduler"]

T = TypeVar("T")

#: (model, seq_id) -> first request, kept for this many recent seq_ids per model.
_SEEN_PER_LANE = 4096
#: At most this many consumed seq_ids ahead of a lane are remembered (more wait out the gap).
_CONSUMED_PER_LANE = 4096
_SHUTDOWN_MESSAGE = "the server shut down before this request ran; resubmit it"


@dataclass
class Job:
    """One unit of engine work and the future it completes."""

    run: Callable[[], Any]
    future: PendingRequest
    seq_id: int | None = None
    #: Called (on the worker thread) when ``run`` raised or the job was dropped.
    on_failure: Callable[[], None] | None = None


@dataclass
class _Lane:
    key: str
    pending: dict[int, Job] = field(default_factory=dict)
    fifo: deque[Job] = field(default_factory=deque)
    last_seq: int = 0
    running: bool = False
    gap_since: float | None = None
    timer_armed: bool = False
    seen: OrderedDict[int, tuple[bytes, dict[str, Any]]] = field(default_factory=OrderedDict)
    #: seq_ids ahead of ``last_seq`` whose requests were rejected: stepped over, not awaited.
    consumed: set[int] = field(default_factory=set)


def classify(exc: BaseException) -> tuple[str, RequestErrorCategory]:
    """The failure message and category a client sees for an exception raised by a job."""
    if isinstance(exc, EngineUserError | EngineNotFoundError):
        return str(exc), RequestErrorCategory.USER
    if isinstance(exc, APIStatusError) and exc.status_code < 500:
        return str(exc), RequestErrorCategory.USER
    return f"internal error: {type(exc).__name__}: {exc}", RequestErrorCategory.SERVER


class Scheduler:
    """Per-model ordered lanes plus free-running jobs over one worker pool.

    Args:
        workers: worker threads.
        gap_timeout: how long a missing ``seq_id`` holds its lane.
        is_ready: whether the engine can take work (checked before each job).
        loop: the server's event loop (for gap timers).
    """

    def __init__(
        self,
        *,
        workers: int,
        gap_timeout: float,
        is_ready: Callable[[], bool],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="tinkex-server-worker")
        self._gap_timeout = gap_timeout
        self._is_ready = is_ready
        self._loop = loop
        self._lock = threading.Lock()
        self._lanes: dict[str, _Lane] = {}
        self._waiting: list[Job] = []
        self._closed = False
        self._log = get_logger("server.scheduler")

    # ------------------------------------------------------------------ submission
    def dedupe(self, key: str, seq_id: int, digest: bytes) -> dict[str, Any] | None:
        """The first response for ``(key, seq_id)`` if this payload was seen before.

        Raises:
            APIStatusError: 409 when the same ``seq_id`` came with a different payload.
        """
        with self._lock:
            lane = self._lanes.get(key)
            seen = lane.seen.get(seq_id) if lane else None
        if seen is None:
            return None
        if seen[0] != digest:
            raise conflict(
                f"seq_id {seq_id} of model {key} was already used for a different request"
            )
        return seen[1]

    def remember(self, key: str, seq_id: int, digest: bytes, response: dict[str, Any]) -> None:
        """Record the response for ``(key, seq_id)`` (see :meth:`dedupe`)."""
        with self._lock:
            lane = self._lanes.setdefault(key, _Lane(key))
            lane.seen[seq_id] = (digest, response)
            while len(lane.seen) > _SEEN_PER_LANE:
                lane.seen.popitem(last=False)

    def consume(self, key: str, seq_id: int) -> bool:
        """Count ``seq_id`` of lane ``key`` as used although no job came of it (rejected).

        Later jobs of the lane then no longer wait for it. Nothing happens when the lane does not
        exist, the ``seq_id`` is already passed, or a job holds it. Returns whether it was noted.
        """
        with self._lock:
            lane = self._lanes.get(key)
            if (
                lane is None
                or seq_id <= lane.last_seq
                or seq_id in lane.pending
                or len(lane.consumed) >= _CONSUMED_PER_LANE
            ):
                return False
            lane.consumed.add(seq_id)
        self._dispatch(key)
        return True

    def submit(self, key: str | None, job: Job) -> None:
        """Queue ``job`` on lane ``key`` (ordered) or, with no key, to run freely."""
        with self._lock:
            if self._closed:
                closed = True
            else:
                closed = False
                if key is None:
                    self._waiting.append(job)
                else:
                    lane = self._lanes.setdefault(key, _Lane(key))
                    if job.seq_id is None:
                        lane.fifo.append(job)
                    else:
                        lane.pending[job.seq_id] = job
        if closed:
            self._drop(job)
            return
        if key is None:
            self._start_waiting()
        else:
            self._dispatch(key)

    def remove_lane(self, key: str) -> None:
        """Forget a lane (after unload); its queued jobs fail."""
        with self._lock:
            lane = self._lanes.pop(key, None)
            jobs = self._take_all(lane) if lane else []
        for job in jobs:
            self._fail(job, f"model {key} was unloaded", RequestErrorCategory.USER)

    def open_lane(self, key: str, last_seq: int) -> None:
        """Continue a lane after ``last_seq`` (a model restored after a restart), so the
        client's next ``seq_id`` runs at once instead of waiting out a gap."""
        with self._lock:
            lane = self._lanes.setdefault(key, _Lane(key))
            lane.last_seq = max(lane.last_seq, last_seq)

    def lane_position(self, key: str) -> int:
        """The highest ``seq_id`` lane ``key`` has run, queued or answered (0 if none)."""
        with self._lock:
            lane = self._lanes.get(key)
            if lane is None:
                return 0
            return max(lane.last_seq, *lane.pending, *lane.seen)

    def kick_all(self) -> None:
        """Re-evaluate every lane and waiting job (the engine just became ready)."""
        with self._lock:
            keys = list(self._lanes)
        self._start_waiting()
        for key in keys:
            self._dispatch(key)

    async def run_sync(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the worker pool and await it (synchronous endpoints)."""
        return await asyncio.wrap_future(self._executor.submit(fn))

    # ------------------------------------------------------------------ execution
    def _start_waiting(self) -> None:
        if not self._is_ready():
            return
        with self._lock:
            jobs, self._waiting = self._waiting, []
        for job in jobs:
            self._executor.submit(self._execute, job)

    def _dispatch(self, key: str) -> None:
        if not self._is_ready():
            return
        with self._lock:
            lane = self._lanes.get(key)
            if lane is None or lane.running or self._closed:
                return
            if not (lane.pending or lane.fifo):
                return
            lane.running = True
        self._executor.submit(self._drain, lane)

    def _next(self, lane: _Lane) -> Job | None:
        """The lane's next runnable job (call with the lock held)."""
        if self._closed:
            return None
        while lane.last_seq + 1 in lane.consumed:
            lane.consumed.discard(lane.last_seq + 1)
            lane.last_seq += 1
        expected = lane.last_seq + 1
        if lane.pending:
            lowest = min(lane.pending)
            if lowest <= expected:
                lane.gap_since = None
                lane.last_seq = max(lane.last_seq, lowest)
                return lane.pending.pop(lowest)
        if lane.fifo:
            return lane.fifo.popleft()
        if not lane.pending:
            return None
        now = time.monotonic()
        if lane.gap_since is None:
            lane.gap_since = now
        waited = now - lane.gap_since
        if waited < self._gap_timeout:
            if not lane.timer_armed:
                lane.timer_armed = True
                self._arm_gap_timer(lane.key, self._gap_timeout - waited + 0.005)
            return None
        lowest = min(lane.pending)
        self._log.warning(
            "tinkex.server.seq_gap_skipped",
            model_id=lane.key,
            missing_from=expected,
            missing_to=lowest - 1,
            waited_s=round(now - lane.gap_since, 3),
        )
        lane.gap_since = None
        lane.last_seq = lowest
        lane.consumed = {s for s in lane.consumed if s > lowest}
        return lane.pending.pop(lowest)

    def _arm_gap_timer(self, key: str, delay: float) -> None:
        def arm() -> None:
            self._loop.call_later(delay, self._on_gap_timer, key)

        with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
            self._loop.call_soon_threadsafe(arm)

    def _on_gap_timer(self, key: str) -> None:
        with self._lock:
            lane = self._lanes.get(key)
            if lane is not None:
                lane.timer_armed = False
        self._dispatch(key)

    def _drain(self, lane: _Lane) -> None:
        while True:
            with self._lock:
                job = self._next(lane)
                if job is None:
                    lane.running = False
                    return
            self._execute(job)

    def _execute(self, job: Job) -> None:
        try:
            result = job.run()
        except Exception as exc:
            if isinstance(exc, APIStatusError) and exc.status_code == 410:
                self._clean_up(job)
                job.future.set_gone(str(exc))  # its polls answer 410: the client submits again
                return
            message, category = classify(exc)
            if category is RequestErrorCategory.SERVER:
                self._log.exception("tinkex.server.job_failed", request_id=job.future.request_id)
            self._fail(job, message, category)
        else:
            job.future.set_result(result)

    def _fail(self, job: Job, message: str, category: RequestErrorCategory) -> None:
        job.future.set_error(message, category)
        self._clean_up(job)

    def _clean_up(self, job: Job) -> None:
        if job.on_failure is not None:
            try:
                job.on_failure()
            except Exception:
                self._log.exception("tinkex.server.job_cleanup_failed")

    def _drop(self, job: Job) -> None:
        self._fail(job, _SHUTDOWN_MESSAGE, RequestErrorCategory.SERVER)

    @staticmethod
    def _take_all(lane: _Lane) -> list[Job]:
        jobs = [lane.pending[k] for k in sorted(lane.pending)] + list(lane.fifo)
        lane.pending.clear()
        lane.fifo.clear()
        return jobs

    # ------------------------------------------------------------------ shutdown
    def shutdown(self) -> None:
        """Stop taking jobs, let running ones finish, fail the rest."""
        with self._lock:
            self._closed = True
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            leftovers = list(self._waiting)
            self._waiting.clear()
            for lane in self._lanes.values():
                leftovers.extend(self._take_all(lane))
        for job in leftovers:
            self._drop(job)
