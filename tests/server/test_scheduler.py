"""The scheduler in-process: seq_id order, readiness, gap timeout, dedupe, failures, shutdown."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tinkex_actors.errors import ConflictError, RequestErrorCategory
from tinkex_actors.server.engine_api import EngineUserError
from tinkex_actors.server.http_errors import gone
from tinkex_actors.server.pending import PendingRequest, PendingRequests, ResultKind
from tinkex_actors.server.scheduler import Job, Scheduler


class Harness:
    """A scheduler on the running loop plus a log of what ran."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, *, ready: bool = True, gap: float = 30.0
    ) -> None:
        self.ready = ready
        self.ran: list[Any] = []
        self.lock = threading.Lock()
        self.futures = PendingRequests(ttl=60)
        self.loop = loop
        self.scheduler = Scheduler(
            workers=4, gap_timeout=gap, is_ready=lambda: self.ready, loop=loop
        )

    def job(
        self, tag: Any, seq_id: int | None = None, fail: Exception | None = None, **kw: Any
    ) -> tuple[Job, PendingRequest]:
        future = self.futures.create("t", ResultKind.JSON, self.loop)

        def run() -> dict[str, Any]:
            with self.lock:
                self.ran.append(tag)
            if fail is not None:
                raise fail
            return {"tag": tag}

        return Job(run=run, future=future, seq_id=seq_id, **kw), future


def run_async(body: Callable[[Harness], Any], **kw: Any) -> None:
    async def main() -> None:
        harness = Harness(asyncio.get_running_loop(), **kw)
        try:
            await body(harness)
        finally:
            await asyncio.to_thread(harness.scheduler.shutdown)

    asyncio.run(main())


async def _all_done(*futures: PendingRequest, timeout: float = 10) -> None:
    for future in futures:
        assert await future.wait(timeout)


def test_runs_a_models_requests_in_seq_order() -> None:
    async def body(h: Harness) -> None:
        futures = []
        for seq in (3, 2, 4, 1):
            job, future = h.job(seq, seq_id=seq)
            h.scheduler.submit("m", job)
            futures.append(future)
        create, created = h.job("create", seq_id=0)
        h.scheduler.submit("m", create)
        await _all_done(created, *futures)
        assert h.ran[0] in ("create", 1)
        assert [t for t in h.ran if t != "create"] == [1, 2, 3, 4]

    run_async(body)


def test_creation_runs_before_the_first_numbered_request() -> None:
    async def body(h: Harness) -> None:
        first, f1 = h.job(1, seq_id=1)
        create, f0 = h.job("create", seq_id=0)
        h.scheduler.submit("m", first)
        h.scheduler.submit("m", create)
        h.ready = True
        h.scheduler.kick_all()
        await _all_done(f0, f1)
        assert h.ran == ["create", 1]

    run_async(body, ready=False)


def test_nothing_runs_before_the_engine_is_ready() -> None:
    async def body(h: Harness) -> None:
        job, future = h.job("a", seq_id=1)
        free, free_future = h.job("free")
        h.scheduler.submit("m", job)
        h.scheduler.submit(None, free)
        await asyncio.sleep(0.2)
        assert h.ran == []
        assert not future.done
        h.ready = True
        h.scheduler.kick_all()
        await _all_done(future, free_future)
        assert sorted(h.ran) == ["a", "free"]

    run_async(body, ready=False)


def test_a_gap_times_out_and_late_requests_still_run() -> None:
    async def body(h: Harness) -> None:
        started = time.monotonic()
        later, later_future = h.job(2, seq_id=2)
        h.scheduler.submit("m", later)
        await _all_done(later_future)
        assert time.monotonic() - started >= 0.25
        late, late_future = h.job(1, seq_id=1)
        h.scheduler.submit("m", late)
        await _all_done(late_future)
        assert h.ran == [2, 1]

    run_async(body, gap=0.3)


def test_jobs_without_seq_id_run_in_arrival_order_and_other_models_run_meanwhile() -> None:
    async def body(h: Harness) -> None:
        blocked, blocked_future = h.job("m:2", seq_id=2)  # waits for seq 1
        h.scheduler.submit("m", blocked)
        futures = []
        for tag in ("x", "y", "z"):
            job, future = h.job(tag)
            h.scheduler.submit("other", job)
            futures.append(future)
        await _all_done(*futures)
        assert h.ran == ["x", "y", "z"]
        assert not blocked_future.done
        first, first_future = h.job("m:1", seq_id=1)
        h.scheduler.submit("m", first)
        await _all_done(first_future, blocked_future)

    run_async(body)


def test_dedupe_by_seq_id() -> None:
    async def body(h: Harness) -> None:
        h.scheduler.remember("m", 5, b"abc", {"request_id": "r5"})
        assert h.scheduler.dedupe("m", 5, b"abc") == {"request_id": "r5"}
        assert h.scheduler.dedupe("m", 6, b"abc") is None
        assert h.scheduler.dedupe("other", 5, b"abc") is None
        with pytest.raises(ConflictError):
            h.scheduler.dedupe("m", 5, b"different")

    run_async(body)


def test_failures_carry_a_category_and_run_cleanup() -> None:
    async def body(h: Harness) -> None:
        cleaned: list[str] = []
        user, user_future = h.job("u", seq_id=1, fail=EngineUserError("bad token"))
        crash, crash_future = h.job(
            "c", seq_id=2, fail=RuntimeError("boom"), on_failure=lambda: cleaned.append("c")
        )
        ok, ok_future = h.job("ok", seq_id=3)
        for job in (user, crash, ok):
            h.scheduler.submit("m", job)
        await _all_done(user_future, crash_future, ok_future)
        assert user_future.category is RequestErrorCategory.USER
        assert user_future.error == "bad token"
        assert crash_future.category is RequestErrorCategory.SERVER
        assert "boom" in crash_future.error
        assert cleaned == ["c"]
        assert ok_future.result == {"tag": "ok"}

    run_async(body)


def test_shutdown_and_unload_fail_queued_jobs() -> None:
    async def body(h: Harness) -> None:
        queued, queued_future = h.job("q", seq_id=5)
        h.scheduler.submit("gone", queued)
        h.scheduler.remove_lane("gone")
        await _all_done(queued_future)
        assert queued_future.category is RequestErrorCategory.USER
        waiting, waiting_future = h.job("w", seq_id=9)
        h.scheduler.submit("m", waiting)
        await asyncio.to_thread(h.scheduler.shutdown)
        await _all_done(waiting_future)
        assert waiting_future.category is RequestErrorCategory.SERVER
        assert "shut down" in waiting_future.error
        late, late_future = h.job("late")
        h.scheduler.submit("m", late)
        await _all_done(late_future)
        assert h.ran == []

    run_async(body)


def test_a_job_that_finds_what_it_needs_gone_completes_as_gone() -> None:
    async def body(h: Harness) -> None:
        cleaned: list[str] = []
        job, future = h.job(
            "g", fail=gone("sampling session s released"), on_failure=lambda: cleaned.append("g")
        )
        h.scheduler.submit(None, job)
        await _all_done(future)
        assert future.gone
        assert not future.failed
        assert "released" in future.error
        assert cleaned == ["g"]

    run_async(body)
