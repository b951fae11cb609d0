"""Test helpers: a scripted HTTP backend and a sleep recorder, for fault timing without a server.

Use the embedded server for behaviour; use these where the timing of faults matters (retries,
back-off, 429 windows) and real sleeps would make a test slow or flaky::

    from tinkex_actors.testing import FakeBackend, SleepRecorder
    from tinkex_actors.transport import HTTPTransport

    backend = FakeBackend([FakeBackend.reply(503), FakeBackend.reply(200, b"{}")])
    sleeps = SleepRecorder()
    transport = HTTPTransport(config, backend=backend, sleep=sleeps, uniform=lambda: 0.0)
    transport.request("POST", "/api/v1/x", body=b"{}")
    assert sleeps.delays == [0.5]
    assert backend.sent[0].headers["x-stainless-retry-count"] == "0"
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import NamedTuple, TypeAlias

from tinkex_actors.transport import RawResponse, Timeouts

__all__ = ["FakeBackend", "Reply", "SentRequest", "SleepRecorder"]

#: What a FakeBackend answers: a response, or an exception to raise (``APIConnectionError``...).
Reply: TypeAlias = RawResponse | BaseException


class SentRequest(NamedTuple):
    """One request a :class:`FakeBackend` received (headers copied at send time)."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None
    timeouts: Timeouts


class _FakeStream:
    def __init__(self, reply: RawResponse) -> None:
        self.status = reply.status
        self.headers = reply.headers
        self._body = reply.body
        self.closed = False

    def chunks(self, size: int) -> Iterator[bytes]:
        for start in range(0, len(self._body), size):
            yield self._body[start : start + size]

    def close(self) -> None:
        self.closed = True


class FakeBackend:
    """A :class:`~tinkex_actors.transport.Backend` that answers from a script. Thread-safe.

    Args:
        replies: answers for the next calls, in order.
        handler: called with each :class:`SentRequest` when the script is empty; without one,
            an empty script fails the test with an ``AssertionError``.
    """

    def __init__(
        self,
        replies: Iterable[Reply] = (),
        *,
        handler: Callable[[SentRequest], Reply] | None = None,
    ) -> None:
        self._replies: deque[Reply] = deque(replies)
        self._handler = handler
        self._lock = threading.Lock()
        self.sent: list[SentRequest] = []
        self.closed = False

    @staticmethod
    def reply(
        status: int = 200, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> RawResponse:
        """Build a reply (header names are lower-cased)."""
        lowered = {name.lower(): value for name, value in (headers or {}).items()}
        return RawResponse(status, lowered, body)

    def add(self, *replies: Reply) -> None:
        """Append answers to the script."""
        with self._lock:
            self._replies.extend(replies)

    def _next(self, request: SentRequest) -> RawResponse:
        with self._lock:
            self.sent.append(request)
            reply = self._replies.popleft() if self._replies else None
        if reply is None:
            if self._handler is None:
                raise AssertionError(f"FakeBackend: no reply scripted for {request.method} ...")
            reply = self._handler(request)
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeouts: Timeouts,
    ) -> RawResponse:
        """Record the request and return (or raise) the next scripted answer."""
        return self._next(SentRequest(method, url, dict(headers), body, timeouts))

    def open(
        self, method: str, url: str, headers: Mapping[str, str], timeouts: Timeouts
    ) -> _FakeStream:
        """Like :meth:`send`, with the body handed out in chunks."""
        return _FakeStream(self._next(SentRequest(method, url, dict(headers), None, timeouts)))

    def close(self) -> None:
        """Mark the backend closed."""
        self.closed = True


class SleepRecorder:
    """A ``sleep`` replacement that records each delay and returns at once. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        with self._lock:
            self.delays.append(seconds)
