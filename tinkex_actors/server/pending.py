"""The server's record of queued requests: each one's outcome, held in memory until retrieved
(and a while after).

The protocol answers a queued request with a future (``{"request_id"}``) and hands out its
result through ``retrieve_future``; this module is the server side of that: a
:class:`PendingRequest` is created when a request is accepted and completed from a worker
thread; ``retrieve_future`` long-polls it on the event loop. Results are encoded lazily, once
per wire format, so repeated polls of a finished request cost a dictionary lookup.

Retention: a finished future stays retrievable for ``ttl`` (an hour) until its result is sent,
then for ``delivered_ttl`` (a minute: a client whose answer was lost polls again within
seconds). So memory follows the request rate over a minute, not over an hour: a sampling
fan-out of hundreds of samples per second holds tens of MiB, not gigabytes. A future whose
id a ``retrieve_futures`` poll acknowledges is dropped at once.

Latency model: a future created with ``latency`` seconds completes no sooner than that long
after its creation (``--sample-latency-ms`` / ``--train-latency-ms``). The engine work runs
as before; only the moment clients see the result moves, and it is scheduled on the event
loop, so a thousand delayed samples cost a thousand timers, not a thousand threads.

A sample of a sampling session is also entered, when it completes, in its target's
completion log (:mod:`tinkex_actors.server.completions`), which ``retrieve_futures`` reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

import orjson

from tinkex_actors.errors import RequestErrorCategory
from tinkex_actors.server.codec_json import encode_forward_backward_json, encode_sample_json
from tinkex_actors.server.codec_proto import encode_forward_backward, encode_sample
from tinkex_actors.server.completions import CompletionLog, CompletionLogs, LogKey
from tinkex_actors.server.engine_api import ForwardBackwardResult, SampleResult

__all__ = ["PendingRequest", "PendingRequests", "PendingStats", "ResultKind"]


class ResultKind(Enum):
    """What a future's result is, which decides how it can be encoded."""

    JSON = "json"
    FORWARD_BACKWARD = "forward_backward"
    SAMPLE = "sample"


_PENDING, _DONE, _FAILED, _GONE = 0, 1, 2, 3
_HEX = frozenset("0123456789abcdef")


@dataclass
class PendingStats:
    """Counters of sampling work, for the benchmark's debug endpoint (event loop only).

    Attributes:
        samples_submitted: asample futures created since start.
        samples_in_flight: submitted and not yet delivered (answer sent, acknowledged or
            swept): what a client still waits for.
        samples_in_flight_peak: the most ``samples_in_flight`` since start or the last reset.
        samples_pending: submitted and not yet completed (visible to clients).
        samples_pending_peak: the most ``samples_pending`` since start or the last reset.
    """

    samples_submitted: int = 0
    samples_in_flight: int = 0
    samples_in_flight_peak: int = 0
    samples_pending: int = 0
    samples_pending_peak: int = 0


class PendingRequest:
    """One queued request and, once it ran, its outcome. Completed once, from any thread."""

    __slots__ = (
        "_encoded",
        "_event",
        "_loop",
        "_settled",
        "_state",
        "_store",
        "category",
        "delivered_at",
        "done_at",
        "error",
        "kind",
        "log",
        "not_before",
        "request_id",
        "result",
        "tenant",
    )

    def __init__(
        self,
        request_id: str,
        tenant: str,
        kind: ResultKind,
        loop: asyncio.AbstractEventLoop,
        *,
        not_before: float = 0.0,
        log: CompletionLog | None = None,
        store: PendingRequests | None = None,
    ) -> None:
        self.request_id = request_id
        self.tenant = tenant
        self.kind = kind
        self.result: Any = None
        self.error = ""
        self.category = RequestErrorCategory.UNKNOWN
        self.done_at = 0.0
        self.delivered_at = 0.0
        #: ``time.monotonic()`` before which the outcome stays hidden (latency model).
        self.not_before = not_before
        #: The completion log this request is reported in (samples of a sampling session).
        self.log = log
        self._state = _PENDING
        self._settled = False
        self._store = store
        self._loop = loop
        self._event: asyncio.Event | None = asyncio.Event()
        self._encoded: dict[bool, bytes] = {}

    @property
    def done(self) -> bool:
        """Whether the request finished (successfully or not) as clients see it."""
        return self._state != _PENDING

    @property
    def failed(self) -> bool:
        """Whether it finished with an error."""
        return self._state == _FAILED

    @property
    def gone(self) -> bool:
        """Whether it can no longer run where it was sent (polls answer 410 with ``error``)."""
        return self._state == _GONE

    def _settle(self, state: int) -> None:
        # Any thread. A closed loop means the server is gone and nobody is waiting.
        with contextlib.suppress(RuntimeError):
            if self.not_before and time.monotonic() < self.not_before:
                self._loop.call_soon_threadsafe(self._publish_later, state)
            else:
                self._state = state
                self.done_at = time.monotonic()
                self._loop.call_soon_threadsafe(self._release)

    def _publish_later(self, state: int) -> None:
        delay = max(0.0, self.not_before - time.monotonic())
        self._loop.call_later(delay, self._publish, state)

    def _publish(self, state: int) -> None:
        self._state = state
        self.done_at = time.monotonic()
        self._release()

    def _release(self) -> None:
        # On the loop, once the outcome is visible. Waiters hold the event; a finished record
        # no longer needs it (wait() checks the state).
        event, self._event = self._event, None
        if event is not None:
            event.set()
        if self._store is not None:
            self._store._completed(self)

    def set_result(self, result: Any) -> None:
        """Complete with a result (a dict for JSON kinds, engine results otherwise)."""
        if not self._settled:
            self._settled = True
            self.result = result
            self._settle(_DONE)

    def set_error(self, message: str, category: RequestErrorCategory) -> None:
        """Complete with a failure the client sees as ``{"error", "category"}``."""
        if not self._settled:
            self._settled = True
            self.error = message
            self.category = category
            self._settle(_FAILED)

    def set_gone(self, message: str) -> None:
        """Complete as gone: what it needed went away before it ran (its sampling session was
        released with its session). Clients are told 410, on which they submit it again."""
        if not self._settled:
            self._settled = True
            self.error = message
            self._settle(_GONE)

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True when done."""
        event = self._event
        if self._state != _PENDING or event is None:
            return self._state != _PENDING
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        return self._state != _PENDING

    def wake(self) -> None:
        """Release waiters without completing (server shutdown)."""
        event = self._event
        if event is not None:
            self._loop.call_soon_threadsafe(event.set)

    def delivered(self) -> None:
        """Record that the finished answer was sent: the short retention starts."""
        if not self.delivered_at:
            self.delivered_at = time.monotonic()
            if self._store is not None:
                self._store._delivered(self)

    def encoded(self, protobuf: bool) -> tuple[bytes, bool]:
        """The answer body and whether it is protobuf (only for the two binary kinds)."""
        binary = protobuf and self.kind is not ResultKind.JSON and self._state == _DONE
        cached = self._encoded.get(binary)
        if cached is None:
            cached = self._encode(binary)
            self._encoded[binary] = cached
        return cached, binary

    def _encode(self, binary: bool) -> bytes:
        if self._state == _FAILED:
            return orjson.dumps({"error": self.error, "category": self.category.value})
        if self.kind is ResultKind.FORWARD_BACKWARD:
            result: ForwardBackwardResult = self.result
            if binary:
                return encode_forward_backward(result)
            return orjson.dumps(encode_forward_backward_json(result))
        if self.kind is ResultKind.SAMPLE:
            sample: SampleResult = self.result
            return encode_sample(sample) if binary else orjson.dumps(encode_sample_json(sample))
        return orjson.dumps(self.result)


class PendingRequests:
    """Every live queued request by request id; finished ones are evicted after ``ttl``
    seconds, or ``delivered_ttl`` seconds after their answer was sent.

    Args:
        ttl: retention of a finished future nobody fetched.
        delivered_ttl: retention after the answer was sent (at most ``ttl``).
        clock: monotonic seconds for the sweep (tests move it).
    """

    def __init__(
        self,
        ttl: float,
        delivered_ttl: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._delivered_ttl = ttl if delivered_ttl is None else min(ttl, delivered_ttl)
        self._clock = clock
        self._records: dict[str, PendingRequest] = {}
        self._lock = threading.Lock()
        # A per-boot prefix: ids from before a restart are never confused with new ones, and
        # are recognised as lost (410) rather than unknown (404).
        self._prefix = secrets.token_hex(4)
        self._counter = itertools.count(1)
        #: The completion logs of sampling sessions (``retrieve_futures``).
        self.logs = CompletionLogs(self._delivered_ttl, clock)
        self.stats = PendingStats()

    def create(
        self,
        tenant: str,
        kind: ResultKind,
        loop: asyncio.AbstractEventLoop,
        *,
        latency: float = 0.0,
        log_key: LogKey | None = None,
    ) -> PendingRequest:
        """A new pending future owned by ``tenant`` (call on the event loop).

        Args:
            tenant: the owner.
            kind: how its result is encoded.
            loop: the server's event loop.
            latency: the outcome becomes visible no sooner than this many seconds from now.
            log_key: report the completion in this target's completion log.
        """
        request_id = f"{self._prefix}-{next(self._counter)}"
        log = None
        if log_key is not None:
            log = self.logs.open(log_key, tenant)
            log.pending += 1
        not_before = time.monotonic() + latency if latency > 0 else 0.0
        record = PendingRequest(
            request_id, tenant, kind, loop, not_before=not_before, log=log, store=self
        )
        if kind is ResultKind.SAMPLE:
            stats = self.stats
            stats.samples_submitted += 1
            stats.samples_in_flight += 1
            stats.samples_pending += 1
            stats.samples_in_flight_peak = max(
                stats.samples_in_flight_peak, stats.samples_in_flight
            )
            stats.samples_pending_peak = max(stats.samples_pending_peak, stats.samples_pending)
        with self._lock:
            self._records[request_id] = record
        return record

    def _completed(self, record: PendingRequest) -> None:
        # On the loop, when the outcome became visible.
        if record.kind is ResultKind.SAMPLE:
            self.stats.samples_pending -= 1
        if record.log is not None:
            # A future acknowledged (dropped) before this ran is not reported again.
            self.logs.record(record.log, record, report=record.request_id in self._records)

    def _delivered(self, record: PendingRequest) -> None:
        if record.kind is ResultKind.SAMPLE:
            self.stats.samples_in_flight -= 1

    def get(self, request_id: str, tenant: str) -> PendingRequest | None:
        """The future, or None when unknown, evicted or someone else's."""
        record = self._records.get(request_id)
        if record is None or record.tenant != tenant:
            return None
        return record

    def acknowledge(self, request_ids: list[str], log: CompletionLog) -> int:
        """Drop the finished futures of ``log`` whose results the client has (``retrieve_futures``
        ``retrieved_request_ids``); ids of other targets and pending ones are ignored.
        Returns how many were dropped."""
        dropped: list[PendingRequest] = []
        with self._lock:
            for request_id in request_ids:
                record = self._records.get(request_id)
                if record is not None and record.log is log and record.done:
                    del self._records[request_id]
                    dropped.append(record)
        for record in dropped:
            log.discard(record.request_id)
            self._forgotten(record)
        return len(dropped)

    def _forgotten(self, record: PendingRequest) -> None:
        if record.kind is ResultKind.SAMPLE and not record.delivered_at:
            record.delivered_at = self._clock()
            self.stats.samples_in_flight -= 1

    def from_earlier_run(self, request_id: str) -> bool:
        """Whether ``request_id`` has the form of this server's ids but an earlier boot's prefix.

        Such a future's result was lost when the server stopped: the caller should submit the
        request again (the SDK re-submits samples on 410), not treat it as a bad id.
        """
        prefix, sep, number = request_id.partition("-")
        return (
            bool(sep)
            and prefix != self._prefix
            and len(prefix) == len(self._prefix)
            and all(ch in _HEX for ch in prefix)
            and number.isdigit()
        )

    def sweep(self) -> int:
        """Drop futures finished more than ``ttl`` seconds ago, or delivered more than
        ``delivered_ttl`` seconds ago, and idle empty completion logs; returns how many
        futures (call on the event loop)."""
        now = self._clock()
        cutoff, delivered_cutoff = now - self._ttl, now - self._delivered_ttl
        with self._lock:
            stale = [
                f
                for f in self._records.values()
                if f.done
                and (f.done_at < cutoff or (f.delivered_at and f.delivered_at < delivered_cutoff))
            ]
            for record in stale:
                del self._records[record.request_id]
        for record in stale:
            if record.log is not None:
                record.log.discard(record.request_id)
            self._forgotten(record)
        self.logs.sweep()
        return len(stale)

    def wake_all(self) -> None:
        """Release every waiter (shutdown): pending polls answer at once."""
        with self._lock:
            records = list(self._records.values())
        for record in records:
            if not record.done:
                record.wake()
        self.logs.close_all()

    def pending(self) -> int:
        """How many futures are not finished yet."""
        with self._lock:
            return sum(1 for f in self._records.values() if not f.done)

    def snapshot(self) -> dict[str, int]:
        """The counters of :class:`PendingStats` plus what is held now (futures, logs)."""
        with self._lock:
            held = len(self._records)
        return {
            **asdict(self.stats),
            "futures_held": held,
            "completion_logs": len(self.logs),
            "completion_log_entries": self.logs.entry_count(),
        }

    def reset_peaks(self) -> None:
        """Start the peaks again from the current values."""
        stats = self.stats
        stats.samples_in_flight_peak = stats.samples_in_flight
        stats.samples_pending_peak = stats.samples_pending
