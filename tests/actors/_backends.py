"""Test backends for the actor runtime: a real HTTP backend that records and injects faults.

``Recorder`` forwards every exchange to the real server (requests) and logs it, in order, so a
test can prove *ordering* (e.g. optim_step was sent before forward_backward's result came
back) without timing assertions. A ``fault`` hook can answer instead of the server (a 429,
a 500) or raise (an unexpected non-Tinkex error, to crash an actor).
"""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import zstandard

from tinkex_actors.config import Config
from tinkex_actors.transport import RawResponse, RawStream, RequestsBackend, Timeouts
from tinkex_actors.types import ForwardBackwardRequest
from tinkex_actors.wire import decode_forward_backward_request

__all__ = ["Event", "Fault", "Recorder", "forward_request"]


class Event(NamedTuple):
    """One logged step: ``kind`` is ``"send"`` or ``"reply"``."""

    kind: str
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes | None
    status: int | None = None


#: ``fault(method, path, headers, body)``: None to pass through, a reply, or raise.
Fault = Callable[[str, str, Mapping[str, str], bytes | None], RawResponse | None]


class Recorder:
    """A Backend that forwards to :class:`RequestsBackend`, logging every exchange."""

    def __init__(self, config: Config, fault: Fault | None = None) -> None:
        self.inner = RequestsBackend(config)
        self.fault = fault
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def _log(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeouts: Timeouts,
    ) -> RawResponse:
        path = urllib.parse.urlsplit(url).path
        self._log(Event("send", method, path, dict(headers), body))
        if self.fault is not None:
            faked = self.fault(method, path, headers, body)
            if faked is not None:
                self._log(
                    Event("reply", method, path, dict(faked.headers), faked.body, faked.status)
                )
                return faked
        reply = self.inner.send(method, url, headers, body, timeouts)
        self._log(Event("reply", method, path, dict(reply.headers), reply.body, reply.status))
        return reply

    def open(
        self, method: str, url: str, headers: Mapping[str, str], timeouts: Timeouts
    ) -> RawStream:
        return self.inner.open(method, url, headers, timeouts)

    def close(self) -> None:
        self.inner.close()

    def sent(self, path_suffix: str) -> list[Event]:
        """The requests sent to paths ending with ``path_suffix``, in order."""
        with self._lock:
            return [e for e in self.events if e.kind == "send" and e.path.endswith(path_suffix)]

    def snapshot(self) -> list[Event]:
        """A copy of the log."""
        with self._lock:
            return list(self.events)


def forward_request(event: Event) -> ForwardBackwardRequest:
    """Decode a logged forward_backward body (zstd-decompressed when it was compressed)."""
    body = event.body or b""
    if event.headers.get("Content-Encoding") == "zstd":
        body = zstandard.ZstdDecompressor().decompress(body, max_output_size=1 << 26)
    request, _ = decode_forward_backward_request(body)
    return request


def request_id_of(event: Event) -> Any:
    """The request_id a logged reply announced."""
    import orjson

    return orjson.loads(event.body or b"{}").get("request_id")
