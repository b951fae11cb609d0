"""The server's record of pending work in-process: completion logs, acknowledgements, the
latency model's delayed completion, and the sampling counters."""

from __future__ import annotations

import asyncio
import threading
import time

from tinkex_actors.errors import RequestErrorCategory
from tinkex_actors.server.completions import CompletionLogs
from tinkex_actors.server.engine_api import SampledSeq, SampleResult
from tinkex_actors.server.pending import PendingRequest, PendingRequests, ResultKind

from ._helpers import DELIVERED_TTL, TTL, ShiftedClock

KEY = ("session-1:sample:0", 0)


def _sample(token: int = 5) -> SampleResult:
    return SampleResult(
        sequences=[SampledSeq(tokens=[token], logprobs=[-0.5], stop_reason="length")]
    )


def _settle(loop: asyncio.AbstractEventLoop) -> None:
    loop.run_until_complete(asyncio.sleep(0))  # the loop publishes completions


def test_completions_are_logged_in_completion_order_with_growing_cursors(
    loop: asyncio.AbstractEventLoop,
) -> None:
    store = PendingRequests(TTL, DELIVERED_TTL)
    records = [store.create("t", ResultKind.SAMPLE, loop, log_key=KEY) for _ in range(4)]
    other = store.create("t", ResultKind.SAMPLE, loop, log_key=("session-1:sample:0", 1))
    unlogged = store.create("t", ResultKind.SAMPLE, loop)
    for index in (2, 0, 3):
        records[index].set_result(_sample(index))
    records[1].set_error("boom", RequestErrorCategory.USER)
    other.set_result(_sample())
    unlogged.set_result(_sample())
    _settle(loop)
    log = store.logs.get(KEY)
    assert log is not None
    entries = list(log.after(0, 100))
    assert [r.request_id for _, r in entries] == [records[i].request_id for i in (2, 0, 3, 1)]
    cursors = [c for c, _ in entries]
    assert cursors == sorted(cursors)
    assert len(set(cursors)) == 4
    assert all(c > store.logs.first_cursor for c in cursors)
    assert entries[-1][1].failed
    # Clone 1 has its own log; a sample without a sampling session is in none.
    other_log = store.logs.get(("session-1:sample:0", 1))
    assert other_log is not None
    assert list(other_log.entries) == [other.request_id]
    assert store.logs.entry_count() == 5

    log.trim(cursors[1])
    assert [r.request_id for _, r in log.after(0, 100)] == [
        records[3].request_id,
        records[1].request_id,
    ]
    assert [r.request_id for _, r in log.after(0, 1)] == [records[3].request_id]


def test_acknowledged_futures_are_dropped_others_ignored(loop: asyncio.AbstractEventLoop) -> None:
    store = PendingRequests(TTL, DELIVERED_TTL)
    done = store.create("t", ResultKind.SAMPLE, loop, log_key=KEY)
    pending = store.create("t", ResultKind.SAMPLE, loop, log_key=KEY)
    elsewhere = store.create("t", ResultKind.SAMPLE, loop, log_key=("other:sample:0", 0))
    done.set_result(_sample())
    elsewhere.set_result(_sample())
    _settle(loop)
    log = store.logs.get(KEY)
    assert log is not None
    ids = [done.request_id, pending.request_id, elsewhere.request_id, "nope-1"]
    assert store.acknowledge(ids, log) == 1
    assert store.get(done.request_id, "t") is None
    assert done.request_id not in log.entries
    assert store.get(pending.request_id, "t") is pending  # not finished: kept
    assert store.get(elsewhere.request_id, "t") is elsewhere  # another target's: kept
    # The acknowledged sample no longer counts as in flight; the two others do.
    assert store.stats.samples_in_flight == 2


def test_sweep_removes_log_entries_with_their_futures(loop: asyncio.AbstractEventLoop) -> None:
    clock = ShiftedClock()
    store = PendingRequests(TTL, DELIVERED_TTL, clock=clock)
    record = store.create("t", ResultKind.SAMPLE, loop, log_key=KEY)
    record.set_result(_sample())
    _settle(loop)
    record.delivered()
    log = store.logs.get(KEY)
    assert log is not None
    assert record.request_id in log.entries
    clock.shift = DELIVERED_TTL + 1
    assert store.sweep() == 1
    assert not log.entries
    # The empty log itself goes once idle for as long.
    assert store.logs.get(KEY) is None
    assert len(store.logs) == 0


def test_a_log_expecting_completions_is_never_swept(loop: asyncio.AbstractEventLoop) -> None:
    # Regression: a log idle for a minute, then sampled from, was dropped while its samples ran;
    # their completions went to a log no poll could find, and the client waited forever.
    clock = ShiftedClock()
    store = PendingRequests(TTL, DELIVERED_TTL, clock=clock)
    first = store.create("t", ResultKind.SAMPLE, loop, log_key=KEY)
    log = store.logs.get(KEY)
    assert log is not None
    assert log.pending == 1
    clock.shift = DELIVERED_TTL * 3
    store.sweep()
    assert store.logs.get(KEY) is log  # a request still to report keeps it
    first.set_result(_sample())
    _settle(loop)
    assert log.pending == 0
    assert list(log.entries) == [first.request_id]
    log.trim(store.logs.last_cursor)
    clock.shift = DELIVERED_TTL * 6
    store.sweep()
    assert store.logs.get(KEY) is None  # now idle and empty: dropped
    # A new request opens a new log, which polls find.
    second = store.create("t", ResultKind.SAMPLE, loop, log_key=KEY)
    second.set_result(_sample())
    _settle(loop)
    fresh = store.logs.get(KEY)
    assert fresh is not None
    assert list(fresh.entries) == [second.request_id]


def test_a_poll_waits_for_the_next_completion_and_close_releases_it(
    loop: asyncio.AbstractEventLoop,
) -> None:
    store = PendingRequests(TTL, DELIVERED_TTL)
    record = store.create("t", ResultKind.SAMPLE, loop, log_key=KEY)
    log = store.logs.get(KEY)
    assert log is not None

    async def poll_then_complete() -> list[str]:
        waiter = asyncio.ensure_future(log.wait(30))
        await asyncio.sleep(0.01)
        assert not waiter.done()
        threading.Thread(target=record.set_result, args=(_sample(),)).start()
        await asyncio.wait_for(waiter, 10)
        return list(log.entries)

    assert loop.run_until_complete(poll_then_complete()) == [record.request_id]

    async def poll_then_close() -> bool:
        waiter = asyncio.ensure_future(log.wait(30))
        await asyncio.sleep(0.01)
        store.logs.close_prefix("session-1:sample:")
        await asyncio.wait_for(waiter, 10)
        return log.closed

    assert loop.run_until_complete(poll_then_close())
    assert not log.entries
    assert store.logs.get(KEY) is None
    # A completion after the close is not logged anywhere; a new sample opens a fresh log.
    late = store.create("t", ResultKind.SAMPLE, loop, log_key=KEY)
    assert late.log is not log
    assert late.log is not None


def test_cursors_start_after_any_earlier_run() -> None:
    first = CompletionLogs(60.0)
    time.sleep(0.002)
    second = CompletionLogs(60.0)
    assert second.first_cursor > first.first_cursor
    assert second.last_cursor == second.first_cursor


def test_latency_holds_the_outcome_back_without_a_thread(loop: asyncio.AbstractEventLoop) -> None:
    store = PendingRequests(TTL, DELIVERED_TTL)
    slow = store.create("t", ResultKind.SAMPLE, loop, latency=0.3, log_key=KEY)
    failing = store.create("t", ResultKind.JSON, loop, latency=0.3)
    fast = store.create("t", ResultKind.SAMPLE, loop, log_key=KEY)

    async def run() -> tuple[float, float]:
        started = time.monotonic()
        slow.set_result(_sample())  # the engine finished at once
        failing.set_error("bad", RequestErrorCategory.USER)
        fast.set_result(_sample())
        await asyncio.sleep(0.05)
        assert fast.done
        assert not slow.done
        assert not failing.done
        assert store.stats.samples_pending == 1
        assert await slow.wait(10)
        assert await failing.wait(10)
        return time.monotonic() - started, slow.done_at - started

    waited, done_after = loop.run_until_complete(run())
    assert done_after >= 0.29
    assert waited >= 0.29
    assert failing.failed
    assert failing.error == "bad"
    assert slow.encoded(True)[1]
    log = store.logs.get(KEY)
    assert log is not None
    assert list(log.entries) == [fast.request_id, slow.request_id]
    assert store.stats.samples_pending == 0


def test_sampling_counters_and_their_peaks(loop: asyncio.AbstractEventLoop) -> None:
    store = PendingRequests(TTL, DELIVERED_TTL)
    records: list[PendingRequest] = [store.create("t", ResultKind.SAMPLE, loop) for _ in range(5)]
    store.create("t", ResultKind.JSON, loop)  # not a sample: not counted
    for record in records[:3]:
        record.set_result(_sample())
    _settle(loop)
    for record in records[:2]:
        record.delivered()
        record.delivered()  # a re-poll after a lost answer counts once
    snap = store.snapshot()
    assert snap["samples_submitted"] == 5
    assert snap["samples_in_flight"] == 3
    assert snap["samples_in_flight_peak"] == 5
    assert snap["samples_pending"] == 2
    assert snap["samples_pending_peak"] == 5
    assert snap["futures_held"] == 6
    store.reset_peaks()
    snap = store.snapshot()
    assert snap["samples_in_flight_peak"] == 3
    assert snap["samples_pending_peak"] == 2
