"""SocketBackend: the HTTP/1.1 it reads, keep-alive reuse and the keep-alive race.

A raw TCP server scripts answers byte for byte (what the shared tests' http.server cannot:
interim answers, folded headers, truncated bodies, bad status lines, closing an idle
keep-alive connection). Every transport test in this folder also runs on this backend.
"""

from __future__ import annotations

import contextlib
import gzip
import multiprocessing
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tinkex_actors import errors
from tinkex_actors.config import Config
from tinkex_actors.testing import SleepRecorder
from tinkex_actors.transport import HTTPTransport, RawResponse, SocketBackend, Timeouts

from .conftest import API_KEY

TIMEOUTS = Timeouts(5.0, 5.0)


@dataclass
class Request:
    """One request as the raw server read it."""

    connection: int
    head: str
    body: bytes

    def header(self, name: str) -> str | None:
        for line in self.head.split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None


# A handler gets the request and the connection's socket; it writes the answer itself and
# returns False to close the connection afterwards.
Handler = Callable[[Request, socket.socket], bool]


@dataclass
class RawServer:
    """A TCP server answering each request with the next scripted handler."""

    handlers: list[Handler] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._accept = threading.Thread(target=self._accept_loop, daemon=True)
        self._accept.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                number = self.connections
                self._sockets.append(sock)
            worker = threading.Thread(target=self._serve, args=(sock, number), daemon=True)
            self._threads.append(worker)
            worker.start()

    def _serve(self, sock: socket.socket, number: int) -> None:
        reader = sock.makefile("rb")
        try:
            while not self._stop.is_set():
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = reader.readline()
                    if not line:
                        return
                    head += line
                text = head.decode("latin-1")
                request = Request(number, text, b"")
                length = int(request.header("content-length") or 0)
                request.body = reader.read(length) if length else b""
                with self._lock:
                    self.requests.append(request)
                    handler = self.handlers.pop(0) if self.handlers else ok(b"{}")
                if not handler(request, sock):
                    return
        except OSError:
            return
        finally:
            reader.close()
            sock.close()

    def close_idle(self) -> None:
        """Close every open connection from the server side (as a keep-alive timeout does)."""
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self._stop.set()
        self.close_idle()
        self._listener.close()
        self._accept.join(5)
        for worker in self._threads:
            worker.join(5)


def raw(data: bytes, keep: bool = True) -> Handler:
    """Answer with ``data`` verbatim."""

    def handle(_: Request, sock: socket.socket) -> bool:
        sock.sendall(data)
        return keep

    return handle


def ok(body: bytes, *extra: str) -> Handler:
    headers = "".join(f"{line}\r\n" for line in extra)
    return raw(
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), headers.encode(), body)
    )


def close_without_answer(_: Request, sock: socket.socket) -> bool:
    return False


@pytest.fixture
def server() -> Iterator[RawServer]:
    srv = RawServer()
    yield srv
    srv.stop()


@pytest.fixture
def backends() -> Iterator[list[SocketBackend]]:
    made: list[SocketBackend] = []
    yield made
    for backend in made:
        backend.close()


def backend_for(server: RawServer, made: list[SocketBackend], pool_size: int = 64) -> SocketBackend:
    backend = SocketBackend(Config(api_key=API_KEY, base_url=server.url, http_pool_size=pool_size))
    made.append(backend)
    return backend


def send(
    backend: SocketBackend,
    server: RawServer,
    method: str = "POST",
    *,
    headers: dict[str, str] | None = None,
    body: bytes | str | None = "default",
) -> RawResponse:
    if headers is None:
        headers = {"X-Idempotency-Key": "key-1"}
    if isinstance(body, str):
        body = b"{}" if method == "POST" else None
    return backend.send(method, server.url + "/api/v1/x", headers, body, TIMEOUTS)


# ---------------------------------------------------------------------------- framing
def test_content_length_body_and_keep_alive(
    server: RawServer, backends: list[SocketBackend]
) -> None:
    backend = backend_for(server, backends)
    server.handlers += [ok(b'{"a":1}', "X-Thing: One"), ok(b"second")]
    first = send(backend, server)
    second = send(backend, server)
    assert (first.status, first.body, first.headers["x-thing"]) == (200, b'{"a":1}', "One")
    assert second.body == b"second"
    assert server.connections == 1  # the keep-alive connection was reused
    request = server.requests[0]
    assert request.head.startswith("POST /api/v1/x HTTP/1.1\r\n")
    assert request.header("host") == f"127.0.0.1:{server.port}"
    assert request.header("content-length") == "2"
    assert request.header("x-idempotency-key") == "key-1"
    assert request.header("accept-encoding") is None  # nothing asks for compression
    assert request.body == b"{}"


def test_post_without_body_sends_zero_length(
    server: RawServer, backends: list[SocketBackend]
) -> None:
    backend = backend_for(server, backends)
    send(backend, server, body=None)
    assert server.requests[0].header("content-length") == "0"


def test_large_body_is_sent_whole(server: RawServer, backends: list[SocketBackend]) -> None:
    backend = backend_for(server, backends)
    body = bytes(range(256)) * 4096  # 1 MiB: written apart from the head
    send(backend, server, body=body)
    assert server.requests[0].body == body


def test_chunked_body_with_extensions_and_trailers(
    server: RawServer, backends: list[SocketBackend]
) -> None:
    backend = backend_for(server, backends)
    server.handlers += [
        raw(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n"
        ),
        ok(b"after"),
    ]
    assert send(backend, server).body == b"hello world"
    assert send(backend, server).body == b"after"
    assert server.connections == 1


def test_body_framed_by_connection_close(server: RawServer, backends: list[SocketBackend]) -> None:
    backend = backend_for(server, backends)
    server.handlers += [
        raw(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", keep=False)
    ]
    assert send(backend, server).body == b"until the end"
    assert send(backend, server).body == b"{}"
    assert server.connections == 2  # not reused: the first answer ended with the connection


def test_http_1_0_answer_closes_unless_keep_alive(
    server: RawServer, backends: list[SocketBackend]
) -> None:
    backend = backend_for(server, backends)
    server.handlers += [
        raw(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"),
        raw(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", keep=False),
    ]
    assert send(backend, server).body == b"ok"
    assert send(backend, server).body == b"ok"
    assert send(backend, server).body == b"{}"
    assert [r.connection for r in server.requests] == [1, 1, 2]


def test_no_body_for_head_204_and_304(server: RawServer, backends: list[SocketBackend]) -> None:
    backend = backend_for(server, backends)
    server.handlers += [
        raw(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n"),
        raw(b"HTTP/1.1 204 No Content\r\n\r\n"),
        raw(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n"),
    ]
    assert send(backend, server, "HEAD").body == b""
    assert send(backend, server).status == 204
    assert send(backend, server).status == 304
    assert send(backend, server).body == b"{}"
    assert server.connections == 1


def test_interim_answers_are_skipped(server: RawServer, backends: list[SocketBackend]) -> None:
    backend = backend_for(server, backends)
    server.handlers += [
        raw(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n"
            b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone"
        )
    ]
    reply = send(backend, server)
    assert (reply.status, reply.body) == (201, b"done")
    assert "link" not in reply.headers


def test_headers_repeated_folded_and_any_case(
    server: RawServer, backends: list[SocketBackend]
) -> None:
    backend = backend_for(server, backends)
    server.handlers += [
        raw(
            b"HTTP/1.1 429 Too Many\r\nContent-Length: 0\r\nSet-Thing: a\r\nset-thing: b\r\n"
            b"Retry-After:   3  \r\nX-Long: first\r\n  second\r\n\r\n"
        )
    ]
    reply = send(backend, server)
    assert reply.status == 429
    assert reply.headers["set-thing"] == "a, b"
    assert reply.headers["retry-after"] == "3"
    assert reply.headers["x-long"] == "first second"


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data)[2:-4]),  # raw deflate, as some servers send
        ("gzip, identity", gzip.compress),
    ],
)
def test_compressed_answers_are_decoded(
    server: RawServer, backends: list[SocketBackend], coding: str, encode: Callable[[bytes], bytes]
) -> None:
    backend = backend_for(server, backends)
    body = b'{"compressed": true}' * 50
    server.handlers += [ok(encode(body), f"Content-Encoding: {coding}")]
    assert send(backend, server).body == body


def test_zstd_answer_is_decoded(server: RawServer, backends: list[SocketBackend]) -> None:
    zstandard = pytest.importorskip("zstandard")
    backend = backend_for(server, backends)
    body = b"zstd body " * 100
    server.handlers += [ok(zstandard.ZstdCompressor().compress(body), "Content-Encoding: zstd")]
    assert send(backend, server).body == body


def test_unknown_coding_is_left_as_sent(server: RawServer, backends: list[SocketBackend]) -> None:
    backend = backend_for(server, backends)
    server.handlers += [ok(b"opaque", "Content-Encoding: x-custom")]
    assert send(backend, server).body == b"opaque"


# ---------------------------------------------------------------------------- bad answers
@pytest.mark.parametrize(
    "answer",
    [
        b"SPDY/3 200 OK\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nContent-Length: 11\r\n\r\n0123456789",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 3\r\n\r\nbad",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X-Many: 1\r\n" * 300 + b"\r\n",
        b"HTTP/1.1 200 OK\r\nX-Huge: " + b"a" * 70_000 + b"\r\n\r\n",
    ],
    ids=[
        "not-http", "bad-status", "bad-header", "two-lengths", "negative-length",
        "bad-chunk", "bad-gzip", "upgrade", "too-many-headers", "overlong-line",
    ],
)  # fmt: skip
def test_malformed_answers_are_connection_errors(
    server: RawServer, backends: list[SocketBackend], answer: bytes
) -> None:
    backend = backend_for(server, backends)
    server.handlers += [raw(answer, keep=False)]
    with pytest.raises(errors.APIConnectionError) as info:
        send(backend, server)
    assert not isinstance(info.value, errors.APITimeoutError)
    assert f"127.0.0.1:{server.port}" in str(info.value)
    assert send(backend, server).body == b"{}"  # a new connection works


def test_truncated_body_is_a_connection_error(
    server: RawServer, backends: list[SocketBackend]
) -> None:
    backend = backend_for(server, backends)
    server.handlers += [raw(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234", keep=False)]
    with pytest.raises(errors.APIConnectionError, match="5 of 10 bytes"):
        send(backend, server)


def test_header_injection_is_refused(server: RawServer, backends: list[SocketBackend]) -> None:
    backend = backend_for(server, backends)
    with pytest.raises(errors.APIConnectionError, match="CR, LF or NUL"):
        send(backend, server, headers={"X-Evil": "a\r\nX-Injected: 1"})
    assert server.requests == []


# ---------------------------------------------------------------------------- keep-alive
def test_idle_connection_closed_by_the_server_is_not_reused(
    server: RawServer, backends: list[SocketBackend]
) -> None:
    backend = backend_for(server, backends)
    send(backend, server)
    server.close_idle()  # as uvicorn does after its keep-alive timeout
    time.sleep(0.05)
    assert send(backend, server).body == b"{}"
    assert server.connections == 2


def test_keep_alive_race_replays_an_idempotent_request_once(
    server: RawServer, backends: list[SocketBackend]
) -> None:
    """The server closes a reused connection as the request arrives: sent again, fresh."""
    backend = backend_for(server, backends)
    send(backend, server)
    server.handlers += [close_without_answer]
    reply = send(backend, server, headers={"X-Idempotency-Key": "key-2"})
    assert reply.body == b"{}"
    assert [r.connection for r in server.requests] == [1, 1, 2]
    assert [r.header("x-idempotency-key") for r in server.requests[1:]] == ["key-2", "key-2"]


def test_keep_alive_race_without_idempotency_is_an_error(
    server: RawServer, backends: list[SocketBackend]
) -> None:
    backend = backend_for(server, backends)
    send(backend, server)
    server.handlers += [close_without_answer]
    with pytest.raises(errors.APIConnectionError, match="closed the connection without answering"):
        send(backend, server, headers={})  # a POST that the server could run twice
    assert len(server.requests) == 2


def test_fresh_connection_closed_without_answer_is_an_error(
    server: RawServer, backends: list[SocketBackend]
) -> None:
    backend = backend_for(server, backends)
    server.handlers += [close_without_answer]
    with pytest.raises(errors.APIConnectionError):
        send(backend, server)
    assert len(server.requests) == 1  # never replayed on a connection that was not reused


def test_transport_sees_one_attempt_through_the_race(server: RawServer) -> None:
    config = Config(api_key=API_KEY, base_url=server.url)
    sleeps = SleepRecorder()
    with HTTPTransport(config, sleep=sleeps) as transport:
        transport.request("POST", "/api/v1/x", body=b"{}")
        server.handlers += [close_without_answer]
        reply = transport.request("POST", "/api/v1/x", body=b"{}", max_retries=0)
    assert reply.retries_taken == 0
    assert sleeps.delays == []


def test_idle_pool_is_bounded_and_closed(server: RawServer, backends: list[SocketBackend]) -> None:
    backend = backend_for(server, backends, pool_size=2)
    barrier = threading.Barrier(4)
    gate = threading.Event()

    def slow(request: Request, sock: socket.socket) -> bool:
        gate.wait(5)
        return ok(b"{}")(request, sock)

    server.handlers += [slow] * 4

    def call() -> None:
        barrier.wait(5)
        send(backend, server)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while len(server.requests) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    gate.set()
    for thread in threads:
        thread.join(5)
    assert server.connections == 4  # four at once: four connections
    assert len(backend._idle) == 2  # only http_pool_size stay open when idle
    backend.close()
    assert len(backend._idle) == 0


def _send_from_child(backend: SocketBackend, url: str, queue: Any) -> None:
    reply = backend.send("GET", url + "/api/v1/x", {}, None, TIMEOUTS)
    queue.put(reply.status)


def test_forked_child_never_reuses_the_parents_connections(
    server: RawServer, backends: list[SocketBackend]
) -> None:
    backend = backend_for(server, backends)
    send(backend, server)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_send_from_child, args=(backend, server.url, queue))
    child.start()
    assert queue.get(timeout=30) == 200
    child.join(30)
    assert child.exitcode == 0
    send(backend, server)  # the parent's connection is still open and still its own
    assert [r.connection for r in server.requests] == [1, 2, 1]
    queue.close()
    queue.join_thread()
