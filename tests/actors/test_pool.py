"""WorkerPool: bounded daemon threads, lazy start, idle retirement, shutdown semantics."""

from __future__ import annotations

import threading
import time

import pytest

from tinkex_actors.actors._pool import WorkerPool
from tinkex_actors.errors import ClientClosedError, TinkexError, ValidationError


def test_runs_tasks_and_returns_results() -> None:
    pool = WorkerPool(4, name="t")
    try:
        futs = [pool.submit(lambda i=i: i * i) for i in range(50)]
        assert [f.result(timeout=5) for f in futs] == [i * i for i in range(50)]
    finally:
        pool.shutdown(wait=True)


def test_exceptions_go_to_the_future() -> None:
    pool = WorkerPool(1, name="t")
    try:
        err = TinkexError("boom")

        def fail() -> None:
            raise err

        assert pool.submit(fail).exception(timeout=5) is err
        # The worker survives a failing task.
        assert pool.submit(lambda: 3).result(timeout=5) == 3
    finally:
        pool.shutdown(wait=True)


def test_thread_count_is_bounded_and_threads_are_daemons() -> None:
    pool = WorkerPool(3, name="bounded")
    gate = threading.Event()
    try:
        futs = [pool.submit(gate.wait, 5) for _ in range(20)]
        time.sleep(0.1)
        assert pool.thread_count == 3
        names = [t for t in threading.enumerate() if t.name.startswith("bounded-")]
        assert len(names) == 3
        assert all(t.daemon for t in names)
        gate.set()
        assert all(f.result(timeout=5) for f in futs)
    finally:
        pool.shutdown(wait=True)
    assert pool.thread_count == 0


def test_idle_workers_retire() -> None:
    pool = WorkerPool(4, name="idle", idle_timeout=0.1)
    try:
        gate = threading.Event()
        futs = [pool.submit(gate.wait, 5) for _ in range(4)]
        time.sleep(0.05)
        assert pool.thread_count == 4
        gate.set()
        for f in futs:
            f.result(timeout=5)
        deadline = time.monotonic() + 5
        while pool.thread_count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pool.thread_count == 0
        # Work after retirement starts a fresh worker.
        assert pool.submit(lambda: "again").result(timeout=5) == "again"
    finally:
        pool.shutdown(wait=True)


def test_steady_load_keeps_thread_count_flat() -> None:
    pool = WorkerPool(8, name="steady")
    try:
        counts = set()
        for _ in range(20):
            futs = [pool.submit(time.sleep, 0.001) for _ in range(16)]
            for f in futs:
                f.result(timeout=5)
            counts.add(pool.thread_count)
        assert max(counts) <= 8
    finally:
        pool.shutdown(wait=True)


def test_shutdown_fails_queued_tasks_and_rejects_new_ones() -> None:
    pool = WorkerPool(1, name="t")
    gate = threading.Event()
    running = pool.submit(gate.wait, 5)
    time.sleep(0.05)
    queued = [pool.submit(lambda: 1) for _ in range(5)]
    pool.shutdown()
    for f in queued:
        assert isinstance(f.exception(timeout=5), ClientClosedError)
    with pytest.raises(ClientClosedError):
        pool.submit(lambda: 1)
    gate.set()
    assert running.result(timeout=5) is True  # a running task finishes normally
    pool.shutdown(wait=True)
    assert pool.thread_count == 0


@pytest.mark.parametrize("bad", [0, -1, True, 2.5])
def test_bad_bound_is_rejected(bad: object) -> None:
    with pytest.raises(ValidationError, match="max_workers"):
        WorkerPool(bad)  # type: ignore[arg-type]


def test_work_after_a_burst_and_retirement_still_runs() -> None:
    """A burst at the bound, then every worker retires: the next task must start a worker.

    (Counting idle workers by completions once let a burst leave the pool believing idle
    workers existed after they had all retired; the next task then waited forever.)
    """
    pool = WorkerPool(2, name="burst", idle_timeout=0.1)
    try:
        futs = [pool.submit(time.sleep, 0.002) for _ in range(60)]
        for f in futs:
            f.result(timeout=5)
        deadline = time.monotonic() + 5
        while pool.thread_count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pool.thread_count == 0
        for _ in range(3):
            assert pool.submit(lambda: "ran").result(timeout=5) == "ran"
    finally:
        pool.shutdown(wait=True)


def test_tasks_queued_while_workers_retire_are_never_stranded() -> None:
    """Submissions racing with idle retirement: every task runs."""
    pool = WorkerPool(4, name="race", idle_timeout=0.01)
    try:
        for _ in range(200):
            futs = [pool.submit(lambda: 1) for _ in range(3)]
            assert sum(f.result(timeout=5) for f in futs) == 3
            time.sleep(0.011)  # about when idle workers give up
    finally:
        pool.shutdown(wait=True)
