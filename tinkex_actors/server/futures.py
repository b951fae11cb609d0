"""Futures: the results of queued requests, held in memory until retrieved (and a while after).

A :class:`FutureRecord` is created when a request is accepted and completed from a worker
thread; ``retrieve_future`` long-polls it on the event loop. Results are encoded lazily, once
per wire format, so repeated polls of a finished future cost a dictionary lookup.

Retention: a finished future stays retrievable for ``ttl`` (an hour) until its result is sent,
then for ``delivered_ttl`` (a minute: a client whose answer was lost polls again within
seconds). So memory follows the request rate over a minute, not over an hour: a sampling
fan-out of hundreds of samples per second holds tens of MiB, not gigabytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import threading
import time
from collections.abc import Callable
from enum import Enum
from typing import Any

import orjson

from tinkex_actors.errors import RequestErrorCategory
from tinkex_actors.server.codec_json import encode_forward_backward_json, encode_sample_json
from tinkex_actors.server.codec_proto import encode_forward_backward, encode_sample
from tinkex_actors.server.engine_api import ForwardBackwardResult, SampleResult

__all__ = ["FutureRecord", "FutureStore", "ResultKind"]


class ResultKind(Enum):
    """What a future's result is, which decides how it can be encoded."""

    JSON = "json"
    FORWARD_BACKWARD = "forward_backward"
    SAMPLE = "sample"


_PENDING, _DONE, _FAILED = 0, 1, 2
_HEX = frozenset("0123456789abcdef")


class FutureRecord:
    """One request's future. Completed once, from any thread."""

    __slots__ = (
        "_encoded",
        "_event",
        "_loop",
        "_state",
        "category",
        "delivered_at",
        "done_at",
        "error",
        "kind",
        "request_id",
        "result",
        "tenant",
    )

    def __init__(
        self, request_id: str, tenant: str, kind: ResultKind, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.request_id = request_id
        self.tenant = tenant
        self.kind = kind
        self.result: Any = None
        self.error = ""
        self.category = RequestErrorCategory.UNKNOWN
        self.done_at = 0.0
        self.delivered_at = 0.0
        self._state = _PENDING
        self._loop = loop
        self._event: asyncio.Event | None = asyncio.Event()
        self._encoded: dict[bool, bytes] = {}

    @property
    def done(self) -> bool:
        """Whether the request finished (successfully or not)."""
        return self._state != _PENDING

    def _finish(self) -> None:
        self.done_at = time.monotonic()
        # A closed loop means the server is gone and nobody is waiting.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._release)

    def _release(self) -> None:
        # Waiters hold the event; a finished record no longer needs it (wait() checks the state).
        event, self._event = self._event, None
        if event is not None:
            event.set()

    def set_result(self, result: Any) -> None:
        """Complete with a result (a dict for JSON kinds, engine results otherwise)."""
        if self._state == _PENDING:
            self.result = result
            self._state = _DONE
            self._finish()

    def set_error(self, message: str, category: RequestErrorCategory) -> None:
        """Complete with a failure the client sees as ``{"error", "category"}``."""
        if self._state == _PENDING:
            self.error = message
            self.category = category
            self._state = _FAILED
            self._finish()

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


class FutureStore:
    """Every live future by request id; finished ones are evicted after ``ttl`` seconds, or
    ``delivered_ttl`` seconds after their answer was sent."""

    def __init__(
        self,
        ttl: float,
        delivered_ttl: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._delivered_ttl = ttl if delivered_ttl is None else min(ttl, delivered_ttl)
        self._clock = clock
        self._futures: dict[str, FutureRecord] = {}
        self._lock = threading.Lock()
        # A per-boot prefix: ids from before a restart are never confused with new ones, and
        # are recognised as lost (410) rather than unknown (404).
        self._prefix = secrets.token_hex(4)
        self._counter = itertools.count(1)

    def create(
        self, tenant: str, kind: ResultKind, loop: asyncio.AbstractEventLoop
    ) -> FutureRecord:
        """A new pending future owned by ``tenant``."""
        request_id = f"{self._prefix}-{next(self._counter)}"
        record = FutureRecord(request_id, tenant, kind, loop)
        with self._lock:
            self._futures[request_id] = record
        return record

    def get(self, request_id: str, tenant: str) -> FutureRecord | None:
        """The future, or None when unknown, evicted or someone else's."""
        record = self._futures.get(request_id)
        if record is None or record.tenant != tenant:
            return None
        return record

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
        ``delivered_ttl`` seconds ago; returns how many."""
        now = self._clock()
        cutoff, delivered_cutoff = now - self._ttl, now - self._delivered_ttl
        with self._lock:
            stale = [
                k
                for k, f in self._futures.items()
                if f.done
                and (f.done_at < cutoff or (f.delivered_at and f.delivered_at < delivered_cutoff))
            ]
            for key in stale:
                del self._futures[key]
        return len(stale)

    def wake_all(self) -> None:
        """Release every waiter (shutdown): pending polls answer try_again at once."""
        with self._lock:
            records = list(self._futures.values())
        for record in records:
            if not record.done:
                record.wake()

    def pending(self) -> int:
        """How many futures are not finished yet."""
        with self._lock:
            return sum(1 for f in self._futures.values() if not f.done)
