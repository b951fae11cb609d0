"""A bounded pool of daemon worker threads whose tasks complete :class:`ActorFuture` objects.

Why not :class:`concurrent.futures.ThreadPoolExecutor`: its threads are joined at interpreter
exit until their queued work drains, so a retrieve_future loop in flight (up to 45 s per poll)
would hang a program that forgot ``close()``; and its threads never retire. This pool's
threads are daemons, start lazily up to ``max_workers`` and retire after ``idle_timeout``
seconds without work, so the thread count follows the load and stays flat when it is steady.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from tinkex_actors._logging import get_logger
from tinkex_actors.errors import ClientClosedError, ValidationError
from tinkex_actors.futures import ActorFuture

__all__ = ["WorkerPool"]

P = ParamSpec("P")
T = TypeVar("T")

_Task = tuple[ActorFuture[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]
_STOP = None
_pool_ids = itertools.count(1)


class WorkerPool:
    """Run callables on up to ``max_workers`` daemon threads.

    Thread-safe: any thread may submit. Tasks start in submission order.
    """

    def __init__(
        self, max_workers: int, *, name: str = "tinkex-worker", idle_timeout: float = 30.0
    ) -> None:
        bound: object = max_workers  # checked at run time: callers may pass anything
        if isinstance(bound, bool) or not isinstance(bound, int) or bound < 1:
            raise ValidationError("must be a positive int", field="max_workers")
        self._max_workers = max_workers
        self._name = f"{name}-{next(_pool_ids)}"
        self._idle_timeout = idle_timeout
        self._queue: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._idle = 0
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
        with self._lock:
            if self._closed:
                raise ClientClosedError("the worker pool is shut down")
            self._queue.put((future, fn, args, kwargs))
            if self._idle > 0:
                self._idle -= 1  # that idle worker will take this task
            elif len(self._threads) < self._max_workers:
                self._start_worker()

    def shutdown(self, *, wait: bool = False, timeout: float = 5.0) -> None:
        """Stop accepting work; fail queued tasks with ClientClosedError; stop the threads.

        Tasks already running finish (their futures complete normally). With ``wait``, block
        up to ``timeout`` seconds in all for the threads to exit.
        """
        with self._lock:
            if self._closed:
                threads = list(self._threads)
            else:
                self._closed = True
                threads = list(self._threads)
                for _ in threads:
                    self._queue.put(_STOP)
        self._fail_queued()
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

    def _fail_queued(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is _STOP:
                self._queue.put(_STOP)  # belongs to a worker; put it back for it
                return
            item[0].set_exception(ClientClosedError("the client was closed before this ran"))

    def _work(self) -> None:
        me = threading.current_thread()
        try:
            while True:
                try:
                    item = self._queue.get(timeout=self._idle_timeout)
                except queue.Empty:
                    with self._lock:
                        # Retire only if no task was promised to this idle worker meanwhile.
                        if self._idle > 0 or self._queue.empty():
                            if self._idle > 0:
                                self._idle -= 1
                            return
                    continue
                if item is _STOP:
                    return
                self._run(item)
                with self._lock:
                    self._idle += 1
        finally:
            with self._lock:
                self._threads.discard(me)

    @staticmethod
    def _run(item: _Task) -> None:
        fut, fn, args, kwargs = item
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            fut.set_exception(exc)
        except BaseException as exc:  # never let a worker die silently with a pending future
            fut.set_exception(exc)
            get_logger("pool").error("tinkex.pool.task_aborted", error=type(exc).__name__)
        else:
            fut.set_result(result)
