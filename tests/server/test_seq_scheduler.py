"""Consumed seq_ids in the scheduler (in-process): a rejected request's seq_id is stepped over.

The gap timeout of these harnesses is long (30 s) unless a test needs it short, so a lane that
waited for a consumed seq_id instead of stepping over it would time the test out.
"""

from __future__ import annotations

import asyncio

from .test_scheduler import Harness, _all_done, run_async

WAIT = 10.0


def test_a_consumed_seq_id_is_stepped_over_at_once() -> None:
    async def body(h: Harness) -> None:
        create, created = h.job("create", seq_id=0)
        h.scheduler.submit("m", create)
        await _all_done(created)
        later, later_future = h.job(2, seq_id=2)
        h.scheduler.submit("m", later)
        await asyncio.sleep(0.2)
        assert not later_future.done  # waits for seq 1
        assert h.scheduler.consume("m", 1)
        await _all_done(later_future, timeout=WAIT)
        assert h.ran == ["create", 2]

    run_async(body)


def test_consumed_ahead_of_the_lane_waits_for_the_missing_one_before_it() -> None:
    async def body(h: Harness) -> None:
        # seq 1 is in flight, seq 2 was rejected, seq 3 is queued: 3 runs right after 1.
        assert h.scheduler.consume("m", 2) is False  # no lane yet: nothing to note
        create, created = h.job("create", seq_id=0)
        h.scheduler.submit("m", create)
        await _all_done(created)
        assert h.scheduler.consume("m", 2)
        third, third_future = h.job(3, seq_id=3)
        h.scheduler.submit("m", third)
        await asyncio.sleep(0.2)
        assert not third_future.done
        first, first_future = h.job(1, seq_id=1)
        h.scheduler.submit("m", first)
        await _all_done(first_future, third_future, timeout=WAIT)
        assert h.ran == ["create", 1, 3]

    run_async(body)


def test_consume_ignores_passed_and_queued_seq_ids() -> None:
    async def body(h: Harness) -> None:
        create, created = h.job("create", seq_id=0)
        first, first_future = h.job(1, seq_id=1)
        h.scheduler.submit("m", create)
        h.scheduler.submit("m", first)
        await _all_done(created, first_future)
        assert h.scheduler.consume("m", 1) is False  # already ran
        third, third_future = h.job(3, seq_id=3)
        h.scheduler.submit("m", third)
        assert h.scheduler.consume("m", 3) is False  # a job holds it: it must still run
        second, second_future = h.job(2, seq_id=2)
        h.scheduler.submit("m", second)
        await _all_done(second_future, third_future, timeout=WAIT)
        assert h.ran == ["create", 1, 2, 3]

    run_async(body)


def test_a_late_request_for_a_consumed_seq_id_still_runs() -> None:
    async def body(h: Harness) -> None:
        create, created = h.job("create", seq_id=0)
        h.scheduler.submit("m", create)
        await _all_done(created)
        assert h.scheduler.consume("m", 1)
        second, second_future = h.job(2, seq_id=2)
        h.scheduler.submit("m", second)
        await _all_done(second_future, timeout=WAIT)
        resent, resent_future = h.job("1-again", seq_id=1)
        h.scheduler.submit("m", resent)
        await _all_done(resent_future, timeout=WAIT)
        assert h.ran == ["create", 2, "1-again"]

    run_async(body)


def test_a_gap_skip_forgets_consumed_seq_ids_it_jumped_over() -> None:
    async def body(h: Harness) -> None:
        create, created = h.job("create", seq_id=0)
        h.scheduler.submit("m", create)
        await _all_done(created)
        assert h.scheduler.consume("m", 3)
        fourth, fourth_future = h.job(4, seq_id=4)
        h.scheduler.submit("m", fourth)
        await _all_done(fourth_future, timeout=WAIT)  # seq 1 and 2 never came: the gap timed out
        assert h.scheduler.consume("m", 3) is False  # passed
        fifth, fifth_future = h.job(5, seq_id=5)
        h.scheduler.submit("m", fifth)
        await _all_done(fifth_future, timeout=WAIT)
        assert h.ran == ["create", 4, 5]

    run_async(body, gap=0.3)
