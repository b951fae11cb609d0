"""How long the server keeps finished futures, and what it keeps of them.

A finished future stays retrievable for ``ttl`` until its answer is sent, then for
``delivered_ttl``: the server's memory follows the request rate over a minute, not over an hour.
"""

from __future__ import annotations

import asyncio
import time

from tinkex_actors.server.engine_api import SampledSeq, SampleResult
from tinkex_actors.server.pending import PendingRequest, PendingRequests, ResultKind

from ._helpers import DELIVERED_TTL, TTL, ShiftedClock


def _sample() -> SampleResult:
    return SampleResult(
        sequences=[SampledSeq(tokens=[5, 6], logprobs=[-0.5, -1.5], stop_reason="length")]
    )


def _finished(store: PendingRequests, loop: asyncio.AbstractEventLoop) -> PendingRequest:
    record = store.create("tenant", ResultKind.SAMPLE, loop)
    record.set_result(_sample())
    loop.run_until_complete(asyncio.sleep(0))  # the loop releases the record's event
    return record


def test_delivered_futures_go_after_the_short_ttl_undelivered_after_the_long(
    loop: asyncio.AbstractEventLoop,
) -> None:
    clock = ShiftedClock()
    store = PendingRequests(TTL, DELIVERED_TTL, clock=clock)
    delivered = _finished(store, loop)
    delivered.delivered()
    waiting = _finished(store, loop)
    pending = store.create("tenant", ResultKind.SAMPLE, loop)

    assert store.sweep() == 0
    clock.shift = DELIVERED_TTL + 1
    assert store.sweep() == 1
    assert store.get(delivered.request_id, "tenant") is None
    assert store.get(waiting.request_id, "tenant") is waiting
    clock.shift = TTL + 1
    assert store.sweep() == 1
    assert store.get(waiting.request_id, "tenant") is None
    assert store.get(pending.request_id, "tenant") is pending  # never evicted while pending


def test_a_delivered_future_still_answers_in_both_formats(
    loop: asyncio.AbstractEventLoop,
) -> None:
    clock = ShiftedClock()
    store = PendingRequests(TTL, DELIVERED_TTL, clock=clock)
    record = _finished(store, loop)
    body, binary = record.encoded(True)
    assert binary
    record.delivered()
    first = record.delivered_at
    clock.shift = DELIVERED_TTL / 2
    record.delivered()  # a re-poll does not extend the retention
    assert record.delivered_at == first
    assert store.sweep() == 0
    assert record.encoded(True) == (body, True)  # a re-poll after a lost answer
    text, binary = record.encoded(False)
    assert not binary
    assert text.startswith(b"{")
    assert loop.run_until_complete(record.wait(0.01))


def test_a_finished_record_drops_its_event_and_waiters_still_wake(
    loop: asyncio.AbstractEventLoop,
) -> None:
    store = PendingRequests(TTL, DELIVERED_TTL)
    record = store.create("tenant", ResultKind.JSON, loop)

    async def finish_later() -> bool:
        waiter = asyncio.ensure_future(record.wait(5.0))
        await asyncio.sleep(0.01)
        loop.call_soon(record.set_result, {"ok": True})
        return await waiter

    started = time.monotonic()
    assert loop.run_until_complete(finish_later())
    assert time.monotonic() - started < 2.0
    assert record._event is None
    record.wake()  # shutdown after completion: nothing to wake, no error
    assert record.encoded(False) == (b'{"ok":true}', False)
