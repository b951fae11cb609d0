"""``ActorFuture``: the handle every tinkex_actors call returns.

An :class:`ActorFuture` wraps a :class:`concurrent.futures.Future` that an actor (or a poller
working for one) completes. It never exposes pykka futures, never blocks an event loop, and
never waits without a bound unless the caller asks for it.

Blocking use::

    out = training.forward_backward(data, "cross_entropy").result(timeout=60)

Callbacks and combinators run in the thread that completes the future (an actor or poller
thread): keep them short and never block in them::

    training.optim_step(adam).map(lambda r: r.metrics).add_done_callback(log_metrics)

asyncio (the loop keeps running while the actor works)::

    out = await training.forward_backward(data, "cross_entropy")

Thread-safety: an ActorFuture may be shared and waited on from any number of threads.
Cancelling is not offered: a request already sent to the server runs to completion; stop
waiting with a ``timeout`` instead. Cancelling an ``await`` only cancels the awaiting task.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import threading
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Any, Generic, Literal, TypeVar, cast

from tinkex_actors._logging import get_logger
from tinkex_actors.errors import TinkexTimeoutError

__all__ = ["ALL_COMPLETED", "FIRST_COMPLETED", "FIRST_EXCEPTION", "ActorFuture", "gather", "wait"]

T = TypeVar("T")
U = TypeVar("U")

FIRST_COMPLETED: Literal["FIRST_COMPLETED"] = "FIRST_COMPLETED"
FIRST_EXCEPTION: Literal["FIRST_EXCEPTION"] = "FIRST_EXCEPTION"
ALL_COMPLETED: Literal["ALL_COMPLETED"] = "ALL_COMPLETED"


class ActorFuture(Generic[T]):
    """The eventual result of a tinkex_actors call.

    Create one with ``ActorFuture()`` (pending), :meth:`completed` or :meth:`failed`; the
    producer completes it with :meth:`set_result` / :meth:`set_exception` (first one wins).
    """

    __slots__ = ("__weakref__", "_cf")

    def __init__(self) -> None:
        self._cf: concurrent.futures.Future[T] = concurrent.futures.Future()

    # ------------------------------------------------------------------ constructors
    @classmethod
    def completed(cls, value: T) -> ActorFuture[T]:
        """Return a future that already holds ``value``."""
        fut: ActorFuture[T] = cls()
        fut.set_result(value)
        return fut

    @classmethod
    def failed(cls, exc: BaseException) -> ActorFuture[T]:
        """Return a future that already holds the exception ``exc``."""
        fut: ActorFuture[T] = cls()
        fut.set_exception(exc)
        return fut

    # ------------------------------------------------------------------ producer side
    def set_result(self, value: T) -> bool:
        """Complete with ``value``. Returns False (and changes nothing) if already complete."""
        try:
            self._cf.set_result(value)
        except concurrent.futures.InvalidStateError:
            return False
        return True

    def set_exception(self, exc: BaseException) -> bool:
        """Complete with ``exc``. Returns False (and changes nothing) if already complete."""
        try:
            self._cf.set_exception(exc)
        except concurrent.futures.InvalidStateError:
            return False
        return True

    # ------------------------------------------------------------------ consumer side
    def done(self) -> bool:
        """Whether the future holds a result or an exception."""
        return self._cf.done()

    def result(self, timeout: float | None = None) -> T:
        """Wait up to ``timeout`` seconds (forever if None) and return the result.

        Raises:
            TinkexTimeoutError: the result did not arrive in time (the call keeps running).
            Exception: whatever the call failed with (a :class:`~tinkex_actors.errors.TinkexError`).
        """
        try:
            return self._cf.result(timeout)
        except concurrent.futures.TimeoutError:
            # Either the wait ran out, or the call itself failed with a TimeoutError (or
            # finished just now): a completed future answers for itself.
            if self._cf.done():
                return self._cf.result(0)
            raise TinkexTimeoutError(f"no result within {timeout} s") from None

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait like :meth:`result` and return the exception, or None on success."""
        try:
            return self._cf.exception(timeout)
        except concurrent.futures.TimeoutError:
            if self._cf.done():
                return self._cf.exception(0)
            raise TinkexTimeoutError(f"no result within {timeout} s") from None

    def add_done_callback(self, fn: Callable[[ActorFuture[T]], object]) -> None:
        """Call ``fn(self)`` once complete (at once if already complete).

        ``fn`` runs in the completing thread. An exception raised by ``fn`` is logged and
        otherwise ignored.
        """

        def _call(_: concurrent.futures.Future[T]) -> None:
            try:
                fn(self)
            except Exception:
                get_logger("futures").exception("tinkex.future.callback_failed")

        self._cf.add_done_callback(_call)

    def map(self, fn: Callable[[T], U]) -> ActorFuture[U]:
        """Return a future of ``fn(result)``; failures (of this future or of ``fn``) pass on."""
        out: ActorFuture[U] = ActorFuture()

        def _apply(src: concurrent.futures.Future[T]) -> None:
            exc = src.exception()
            if exc is not None:
                out.set_exception(exc)
                return
            try:
                out.set_result(fn(src.result()))
            except Exception as err:
                out.set_exception(err)

        self._cf.add_done_callback(_apply)
        return out

    def then(self, fn: Callable[[T], ActorFuture[U]]) -> ActorFuture[U]:
        """Chain a call that itself returns an ActorFuture (flat-map)."""
        out: ActorFuture[U] = ActorFuture()

        def _forward(inner: ActorFuture[U]) -> None:
            exc = inner._cf.exception()
            if exc is not None:
                out.set_exception(exc)
            else:
                out.set_result(inner._cf.result())

        def _apply(src: concurrent.futures.Future[T]) -> None:
            exc = src.exception()
            if exc is not None:
                out.set_exception(exc)
                return
            try:
                fn(src.result()).add_done_callback(_forward)
            except Exception as err:
                out.set_exception(err)

        self._cf.add_done_callback(_apply)
        return out

    def __await__(self) -> Generator[Any, None, T]:
        """Await without blocking the event loop (the actor completes it from its thread)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[T] = loop.create_future()

        def _copy(src: concurrent.futures.Future[T]) -> None:
            if waiter.cancelled():
                return
            exc = src.exception()
            if exc is not None:
                waiter.set_exception(exc)
            else:
                waiter.set_result(src.result())

        def _on_done(src: concurrent.futures.Future[T]) -> None:
            # A loop that closed while we worked has nobody waiting on it.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_copy, src)

        self._cf.add_done_callback(_on_done)
        return waiter.__await__()

    def __repr__(self) -> str:
        if not self._cf.done():
            state = "pending"
        elif self._cf.exception() is not None:
            state = f"failed {type(self._cf.exception()).__name__}"
        else:
            state = "done"
        return f"<ActorFuture {state}>"


def gather(futures: Iterable[ActorFuture[T]]) -> ActorFuture[list[T]]:
    """Return a future of every result, in order; it fails with the first failure seen."""
    items = list(futures)
    out: ActorFuture[list[T]] = ActorFuture()
    if not items:
        out.set_result([])
        return out
    results: list[T | None] = [None] * len(items)
    remaining = [len(items)]
    lock = threading.Lock()

    def _done(index: int, fut: ActorFuture[T]) -> None:
        exc = fut._cf.exception()
        if exc is not None:
            out.set_exception(exc)
            return
        with lock:
            results[index] = fut._cf.result()
            remaining[0] -= 1
            finished = remaining[0] == 0
        if finished:
            out.set_result(cast("list[T]", results))

    for index, fut in enumerate(items):
        fut.add_done_callback(functools.partial(_done, index))
    return out


def wait(
    futures: Sequence[ActorFuture[Any]],
    timeout: float | None = None,
    return_when: Literal["FIRST_COMPLETED", "FIRST_EXCEPTION", "ALL_COMPLETED"] = ALL_COMPLETED,
) -> tuple[set[ActorFuture[Any]], set[ActorFuture[Any]]]:
    """Block until ``return_when`` holds or ``timeout`` passes; return ``(done, not_done)``.

    Like :func:`concurrent.futures.wait`; never raises on timeout.
    """
    by_cf = {fut._cf: fut for fut in futures}
    done, not_done = concurrent.futures.wait(by_cf, timeout=timeout, return_when=return_when)
    return {by_cf[f] for f in done}, {by_cf[f] for f in not_done}
