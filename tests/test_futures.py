"""ActorFuture: results, failures, timeouts, callbacks, combinators, asyncio."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from tinkex_actors.errors import APITimeoutError, TinkexError, TinkexTimeoutError
from tinkex_actors.futures import FIRST_COMPLETED, ActorFuture, gather, wait


def _complete_later(fut: ActorFuture[int], value: int, delay: float) -> threading.Thread:
    t = threading.Thread(target=lambda: (time.sleep(delay), fut.set_result(value)))
    t.start()
    return t


class TestResult:
    def test_result_from_another_thread(self) -> None:
        fut: ActorFuture[int] = ActorFuture()
        t = _complete_later(fut, 7, 0.05)
        assert fut.result(timeout=5) == 7
        assert fut.done()
        t.join()

    def test_timeout_raises_library_timeout_that_is_builtin_timeout(self) -> None:
        fut: ActorFuture[int] = ActorFuture()
        with pytest.raises(TinkexTimeoutError) as info:
            fut.result(timeout=0.01)
        assert isinstance(info.value, TimeoutError)
        assert not fut.done()
        # Still usable after a timed-out wait.
        fut.set_result(3)
        assert fut.result(timeout=0) == 3

    def test_stored_timeout_error_is_reraised_as_is(self) -> None:
        err = APITimeoutError("read timed out", method="POST", path="/api/v1/asample")
        fut: ActorFuture[int] = ActorFuture.failed(err)
        with pytest.raises(APITimeoutError) as info:
            fut.result(timeout=1)
        assert info.value is err
        assert fut.exception(timeout=0) is err

    def test_first_completion_wins(self) -> None:
        fut: ActorFuture[int] = ActorFuture()
        assert fut.set_result(1)
        assert not fut.set_result(2)
        assert not fut.set_exception(TinkexError("late"))
        assert fut.result() == 1

    def test_exception_returns_none_on_success(self) -> None:
        assert ActorFuture.completed(5).exception(timeout=0) is None

    def test_repr_shows_state_only(self) -> None:
        assert repr(ActorFuture()) == "<ActorFuture pending>"
        assert repr(ActorFuture.completed(1)) == "<ActorFuture done>"
        assert repr(ActorFuture.failed(ValueError("x"))) == "<ActorFuture failed ValueError>"


class TestCallbacks:
    def test_callback_runs_once_complete_and_at_once_if_done(self) -> None:
        seen: list[int] = []
        fut: ActorFuture[int] = ActorFuture()
        fut.add_done_callback(lambda f: seen.append(f.result()))
        assert seen == []
        fut.set_result(4)
        fut.add_done_callback(lambda f: seen.append(f.result() * 10))
        assert seen == [4, 40]

    def test_failing_callback_does_not_break_completion(self) -> None:
        fut: ActorFuture[int] = ActorFuture()

        def boom(_: ActorFuture[int]) -> None:
            raise RuntimeError("handler bug")

        fut.add_done_callback(boom)
        assert fut.set_result(1)
        assert fut.result() == 1


class TestCombinators:
    def test_map_applies_and_propagates_failures(self) -> None:
        assert ActorFuture.completed(2).map(lambda v: v + 1).result(0) == 3
        err = TinkexError("nope")
        assert ActorFuture.failed(err).map(lambda v: v).exception(0) is err
        bad = ActorFuture.completed(1).map(lambda v: v / 0)
        assert isinstance(bad.exception(0), ZeroDivisionError)

    def test_then_chains_futures(self) -> None:
        inner: ActorFuture[str] = ActorFuture()
        chained = ActorFuture.completed(1).then(lambda v: inner)
        assert not chained.done()
        inner.set_result("x")
        assert chained.result(0) == "x"
        err = TinkexError("inner failed")
        assert ActorFuture.completed(1).then(lambda v: ActorFuture.failed(err)).exception(0) is err

    def test_gather_keeps_order_and_fails_fast(self) -> None:
        a: ActorFuture[int] = ActorFuture()
        b: ActorFuture[int] = ActorFuture()
        both = gather([a, b])
        b.set_result(2)
        assert not both.done()
        a.set_result(1)
        assert both.result(0) == [1, 2]
        assert gather([]).result(0) == []
        c: ActorFuture[int] = ActorFuture()
        err = TinkexError("c failed")
        failing = gather([c, ActorFuture.failed(err)])
        assert failing.exception(0) is err

    def test_wait_first_completed_and_timeout(self) -> None:
        a: ActorFuture[int] = ActorFuture()
        b: ActorFuture[int] = ActorFuture.completed(1)
        done, pending = wait([a, b], timeout=1, return_when=FIRST_COMPLETED)
        assert done == {b}
        assert pending == {a}
        done, pending = wait([a], timeout=0.01)
        assert done == set()
        assert pending == {a}


class TestAsyncio:
    def test_await_does_not_block_the_loop(self) -> None:
        async def main() -> tuple[int, int]:
            fut: ActorFuture[int] = ActorFuture()
            t = _complete_later(fut, 9, 0.2)
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while not fut.done():
                    ticks += 1
                    await asyncio.sleep(0.01)

            tick_task = asyncio.create_task(ticker())
            value = await fut
            await tick_task
            t.join()
            return value, ticks

        value, ticks = asyncio.run(main())
        assert value == 9
        assert ticks >= 5  # the loop kept running while we waited

    def test_await_raises_failures(self) -> None:
        async def main() -> None:
            await ActorFuture.failed(TinkexError("bad"))

        with pytest.raises(TinkexError, match="bad"):
            asyncio.run(main())

    def test_cancelled_await_leaves_the_future_completable(self) -> None:
        fut: ActorFuture[int] = ActorFuture()

        async def main() -> None:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(fut, timeout=0.01)

        asyncio.run(main())
        assert fut.set_result(1)  # the producer is not affected by the cancelled waiter
        assert fut.result(0) == 1
