"""A bounded pool of daemon worker threads whose tasks complete :class:`ActorFuture` objects.

Why not :class:`concurrent.futures.ThreadPoolExecutor`: its threads are joined at interpreter
exit until their queued work drains, so a retrieve_future loop in flight (up to 45 s per poll)
would hang a program that forgot ``close()``; and its threads never retire. This pool's
threads are daemons, start lazily up to ``max_workers`` and retire after ``idle_timeout``
seconds without work, so the thread count follows the load and stays flat when it is steady.

Bookkeeping, all under one lock: ``_tasks`` (queued, FIFO), ``_threads`` (alive workers) and
``_waiting`` (workers blocked for work). A submission starts a worker when more tasks are
queued than workers wait, below the bound; a worker takes the next task before it ever waits
and retires only when the queue is empty, so no task is left queued with no worker to run it.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from tinkex_actors._logging import get_logger
from tinkex_actors._scalar_checks import positive_int
from tinkex_actors.errors import ClientClosedError
from tinkex_actors.futures import ActorFuture

__all__ = ["WorkerPool"]

P = ParamSpec("P")
T = TypeVar("T")

# (future or None for fire-and-forget work, function, args, kwargs)
_Task = tuple[ActorFuture[Any] | None, Callable[..., Any], tuple[Any, ...], dict[str, Any]]
_pool_ids = itertools.count(1)


class WorkerPool:
    """Run callables on up to ``max_workers`` daemon threads.

    Thread-safe: any thread may submit. Tasks start in submission order.
    """

    def __init__(
        self, max_workers: int, *, name: str = "tinkex-worker", idle_timeout: float = 30.0
    ) -> None:
        self._max_workers = positive_int(max_workers, "max_workers")
        self._name = f"{name}-{next(_pool_ids)}"
        self._idle_timeout = idle_timeout
        self._lock = threading.Lock()
        self._work_ready = threading.Condition(self._lock)
        self._tasks: collections.deque[_Task] = collections.deque()
        self._threads: set[threading.Thread] = set()
        self._waiting = 0
        self._closed = False
        self._thread_ids = itertools.count(1)

    @property
    def max_workers(self) -> int:
        """The bound on worker threads."""
        return self._max_workers

    @property
    def thread_count(self) -> int:
        """Worker threads alive now."""
        with self._lock:
            return len(self._threads)

    @property
    def closed(self) -> bool:
        """Whether :meth:`shutdown` was called."""
        return self._closed

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> ActorFuture[T]:
        """Queue ``fn(*args, **kwargs)``; its return value or exception completes the future.

        Raises:
            ClientClosedError: the pool was shut down.
        """
        fut: ActorFuture[T] = ActorFuture()
        self.submit_into(fut, fn, *args, **kwargs)
        return fut

    def submit_into(
        self, future: ActorFuture[T], fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> None:
        """Like :meth:`submit`, completing the caller's ``future`` (saves one future per task).

        Raises:
            ClientClosedError: the pool was shut down (``future`` is left untouched).
        """
        self._enqueue((future, fn, args, kwargs))

    def _enqueue(self, task: _Task) -> None:
        with self._lock:
            if self._closed:
                raise ClientClosedError("the worker pool is shut down")
            tasks = self._tasks
            tasks.append(task)
            if self._waiting:
                self._work_ready.notify()
            # A woken worker takes one task: start another while tasks outnumber waiters.
            if len(tasks) > self._waiting and len(self._threads) < self._max_workers:
                self._start_worker()

    def execute(self, fn: Callable[P, object], /, *args: P.args, **kwargs: P.kwargs) -> None:
        """Queue ``fn(*args, **kwargs)`` with no future: ``fn`` completes whatever it serves
        itself. An exception escaping it is a bug: logged at ERROR, never lost silently.

        Raises:
            ClientClosedError: the pool was shut down.
        """
        self._enqueue((None, fn, args, kwargs))

    def thread_idents(self) -> set[int]:
        """The ids of the worker threads alive now (to interrupt their HTTP exchanges)."""
        with self._lock:
            return {t.ident for t in self._threads if t.ident is not None}

    def threads(self) -> list[threading.Thread]:
        """The worker threads alive now (to join them)."""
        with self._lock:
            return list(self._threads)

    def shutdown(self, *, wait: bool = False, timeout: float = 5.0) -> None:
        """Stop accepting work; fail queued tasks with ClientClosedError; stop the threads.

        Tasks already running finish (their futures complete normally). With ``wait``, block
        up to ``timeout`` seconds in all for the threads to exit.
        """
        with self._lock:
            self._closed = True
            threads = list(self._threads)
            queued = list(self._tasks)
            self._tasks.clear()
            self._work_ready.notify_all()
        for item in queued:
            # Fire-and-forget work is dropped: its owner fails what it serves when it closes.
            future = item[0]
            if future is not None:
                future.set_exception(ClientClosedError("the client was closed before this ran"))
        if wait:
            # One deadline for all threads: shutdown is bounded by ``timeout``, not n * timeout.
            deadline = time.monotonic() + timeout
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join(max(0.0, deadline - time.monotonic()))

    # ---------------------------------------------------------------- internals
    def _start_worker(self) -> None:
        # Called with self._lock held.
        thread = threading.Thread(
            target=self._work, name=f"{self._name}-{next(self._thread_ids)}", daemon=True
        )
        self._threads.add(thread)
        thread.start()

    def _next(self, me: threading.Thread) -> _Task | None:
        # The next task, or None when this worker stops (idle too long, or shut down).
        with self._lock:
            while not self._tasks:
                if self._closed:
                    self._threads.discard(me)
                    return None
                self._waiting += 1
                try:
                    woken = self._work_ready.wait(self._idle_timeout)
                finally:
                    self._waiting -= 1
                if not woken and not self._tasks:
                    self._threads.discard(me)  # under the lock: submit_into sees it gone
                    return None
            return self._tasks.popleft()

    def _work(self) -> None:
        me = threading.current_thread()
        try:
            while (item := self._next(me)) is not None:
                self._run(item)
        finally:
            with self._lock:
                self._threads.discard(me)

    @staticmethod
    def _run(item: _Task) -> None:
        fut, fn, args, kwargs = item
        if fut is None:
            try:
                fn(*args, **kwargs)
            except BaseException as exc:
                get_logger("pool").error(
                    "tinkex.pool.task_failed",
                    task=getattr(fn, "__qualname__", "?"),
                    error=f"{type(exc).__name__}: {exc}"[:300],
                )
            return
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            fut.set_exception(exc)
        except BaseException as exc:  # never let a worker die silently with a pending future
            fut.set_exception(exc)
            get_logger("pool").error("tinkex.pool.task_aborted", error=type(exc).__name__)
        else:
            fut.set_result(result)
