"""RequestsBackend: what it reads, keep-alive reuse, bounded answers, typed failures.

A raw TCP server scripts answers byte for byte (what the shared tests' http.server cannot:
interim answers, folded headers, truncated bodies, bad status lines and chunk sizes, an early
413 during an upload, closing an idle keep-alive connection).
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
from tinkex_actors.transport import HTTPTransport, RawResponse, RequestsBackend, Timeouts

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
    #: Answer as soon as the head is read, leaving the body unread (an early error answer).
    answer_before_body: bool = False

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
                if not self.answer_before_body:
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
def backends() -> Iterator[list[RequestsBackend]]:
    made: list[RequestsBackend] = []
    yield made
    for backend in made:
        backend.close()


def backend_for(server: RawServer, made: list[RequestsBackend], **options: Any) -> RequestsBackend:
    backend = RequestsBackend(Config(api_key=API_KEY, base_url=server.url, **options))
    made.append(backend)
    return backend


def send(
    backend: RequestsBackend,
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
    server: RawServer, backends: list[RequestsBackend]
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
    assert request.body == b"{}"


def test_post_without_body_sends_zero_length(
    server: RawServer, backends: list[RequestsBackend]
) -> None:
    backend = backend_for(server, backends)
    send(backend, server, body=None)
    assert server.requests[0].header("content-length") in ("0", None)
    assert server.requests[0].body == b""


def test_large_body_is_sent_whole(server: RawServer, backends: list[RequestsBackend]) -> None:
    backend = backend_for(server, backends)
    body = bytes(range(256)) * 4096  # 1 MiB
    send(backend, server, body=body)
    assert server.requests[0].body == body


def test_chunked_body_with_extensions_and_trailers(
    server: RawServer, backends: list[RequestsBackend]
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


def test_body_framed_by_connection_close(
    server: RawServer, backends: list[RequestsBackend]
) -> None:
    backend = backend_for(server, backends)
    server.handlers += [
        raw(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", keep=False)
    ]
    assert send(backend, server).body == b"until the end"
    assert send(backend, server).body == b"{}"
    assert server.connections == 2  # not reused: the first answer ended with the connection


def test_no_body_for_head_204_and_304(server: RawServer, backends: list[RequestsBackend]) -> None:
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


def test_100_continue_is_skipped(server: RawServer, backends: list[RequestsBackend]) -> None:
    backend = backend_for(server, backends)
    server.handlers += [
        raw(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone")
    ]
    reply = send(backend, server)
    assert (reply.status, reply.body) == (201, b"done")


def test_headers_repeated_and_any_case(server: RawServer, backends: list[RequestsBackend]) -> None:
    backend = backend_for(server, backends)
    server.handlers += [
        raw(
            b"HTTP/1.1 429 Too Many\r\nContent-Length: 0\r\nSet-Thing: a\r\nset-thing: b\r\n"
            b"Retry-After: 3\r\n\r\n"
        )
    ]
    reply = send(backend, server)
    assert reply.status == 429
    assert reply.headers["set-thing"] == "a, b"
    assert reply.headers["retry-after"] == reply.headers["Retry-After"] == "3"


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data)[2:-4]),  # raw deflate, as some servers send
    ],
)
def test_compressed_answers_are_decoded(
    server: RawServer,
    backends: list[RequestsBackend],
    coding: str,
    encode: Callable[[bytes], bytes],
) -> None:
    backend = backend_for(server, backends)
    body = b'{"compressed": true}' * 50
    server.handlers += [ok(encode(body), f"Content-Encoding: {coding}")]
    assert send(backend, server).body == body


def test_unknown_coding_is_left_as_sent(server: RawServer, backends: list[RequestsBackend]) -> None:
    backend = backend_for(server, backends)
    server.handlers += [ok(b"opaque", "Content-Encoding: x-custom")]
    assert send(backend, server).body == b"opaque"


# ---------------------------------------------------------------------------- bad answers
@pytest.mark.parametrize(
    "answer",
    [
        b"SPDY/3 200 OK\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nContent-Length: 11\r\n\r\n0123456789",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 3\r\n\r\nbad",
        b"HTTP/1.1 200 OK\r\n" + b"X-Many: 1\r\n" * 300 + b"\r\n",
        b"HTTP/1.1 200 OK\r\nX-Huge: " + b"a" * 70_000 + b"\r\n\r\n",
    ],
    ids=[
        "not-http", "bad-status", "status-2000", "two-lengths", "bad-chunk", "negative-chunk",
        "bad-gzip", "too-many-headers", "overlong-line",
    ],
)  # fmt: skip
def test_malformed_answers_are_connection_errors(
    server: RawServer, backends: list[RequestsBackend], answer: bytes
) -> None:
    backend = backend_for(server, backends)
    server.handlers += [raw(answer, keep=False)]
    with pytest.raises(errors.APIConnectionError) as info:
        send(backend, server)
    assert not isinstance(info.value, errors.APITimeoutError)
    assert f"127.0.0.1:{server.port}" in str(info.value)
    assert API_KEY not in str(info.value)
    # The server closed without saying so (no "Connection: close"): once its close has
    # arrived, the pool sees the dropped connection and the next request opens a new one.
    time.sleep(0.05)
    assert send(backend, server).body == b"{}"


def test_chunk_sizes_are_read_as_urllib3_reads_them(
    server: RawServer, backends: list[RequestsBackend]
) -> None:
    """urllib3 (like Python's int) accepts a 0x prefix: the framing is the same, so the body is
    read whole and the connection stays usable."""
    backend = backend_for(server, backends)
    server.handlers += [
        raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n")
    ]
    assert send(backend, server).body == b"abc"
    assert send(backend, server).body == b"{}"


def test_truncated_body_is_a_connection_error(
    server: RawServer, backends: list[RequestsBackend]
) -> None:
    backend = backend_for(server, backends)
    server.handlers += [raw(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234", keep=False)]
    with pytest.raises(errors.APIConnectionError, match="IncompleteRead"):
        send(backend, server)


# ---------------------------------------------------------------------------- size bound
def test_a_huge_content_length_is_refused_before_reading(
    server: RawServer, backends: list[RequestsBackend]
) -> None:
    backend = backend_for(server, backends)
    server.handlers += [raw(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\nabc")]
    with pytest.raises(errors.ResponseTooLargeError) as info:
        send(backend, server)
    assert info.value.size == 10**12
    assert info.value.limit == Config(api_key=API_KEY).max_response_bytes
    assert "max_response_bytes" in str(info.value)
    assert send(backend, server).body == b"{}"  # the connection was dropped, a new one works


def test_a_chunked_answer_growing_past_the_bound_is_cut_off(
    server: RawServer, backends: list[RequestsBackend]
) -> None:
    backend = backend_for(server, backends, max_response_bytes=1000)
    chunk = b"%x\r\n%s\r\n" % (600, b"x" * 600)
    server.handlers += [
        raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 3 + b"0\r\n\r\n"),
        ok(b"y" * 1000),
    ]
    with pytest.raises(errors.ResponseTooLargeError) as info:
        send(backend, server)
    assert info.value.size is None
    assert send(backend, server).body == b"y" * 1000  # exactly the bound is fine


def test_a_gzip_bomb_is_cut_off_after_decoding(
    server: RawServer, backends: list[RequestsBackend]
) -> None:
    backend = backend_for(server, backends, max_response_bytes=100_000)
    bomb = gzip.compress(b"0" * 10_000_000)  # ~10 KB on the wire
    server.handlers += [ok(bomb, "Content-Encoding: gzip")]
    with pytest.raises(errors.ResponseTooLargeError):
        send(backend, server)


# ---------------------------------------------------------------------------- early answers
def test_an_early_413_during_an_upload_is_returned(backends: list[RequestsBackend]) -> None:
    """The server answers 413 from the head and closes without reading the body."""
    server = RawServer(answer_before_body=True)
    try:
        backend = backend_for(server, backends)

        def too_large(_: Request, sock: socket.socket) -> bool:
            detail = b'{"detail": "body too large"}'
            sock.sendall(
                b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
                b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(detail), detail)
            )
            sock.shutdown(socket.SHUT_WR)
            time.sleep(0.2)  # the client is still writing into a full buffer
            return False

        server.handlers += [too_large]
        reply = send(backend, server, body=b"x" * (32 * 1024 * 1024))
        assert reply.status == 413
        assert b"too large" in reply.body
    finally:
        server.stop()


def test_the_transport_raises_the_413_without_retrying(backends: list[RequestsBackend]) -> None:
    server = RawServer(answer_before_body=True)
    try:
        config = Config(api_key=API_KEY, base_url=server.url)
        sleeps = SleepRecorder()

        def too_large(_: Request, sock: socket.socket) -> bool:
            sock.sendall(
                b"HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            )
            sock.shutdown(socket.SHUT_WR)
            time.sleep(0.2)
            return False

        server.handlers += [too_large]
        with (
            HTTPTransport(config, sleep=sleeps) as transport,
            pytest.raises(errors.PayloadTooLargeError),
        ):
            transport.request("POST", "/api/v1/x", body=b"x" * (32 * 1024 * 1024))
        assert sleeps.delays == []
        assert len(server.requests) == 1
    finally:
        server.stop()


# ---------------------------------------------------------------------------- keep-alive
def test_idle_connection_closed_by_the_server_is_not_reused(
    server: RawServer, backends: list[RequestsBackend]
) -> None:
    backend = backend_for(server, backends)
    send(backend, server)
    server.close_idle()  # as uvicorn does after its keep-alive timeout
    time.sleep(0.05)
    assert send(backend, server).body == b"{}"
    assert server.connections == 2


def test_fresh_connection_closed_without_answer_is_an_error(
    server: RawServer, backends: list[RequestsBackend]
) -> None:
    backend = backend_for(server, backends)
    server.handlers += [close_without_answer]
    with pytest.raises(errors.APIConnectionError):
        send(backend, server)
    assert len(server.requests) == 1  # the backend never replays on its own


def _concurrent_sends(backend: RequestsBackend, server: RawServer, count: int) -> None:
    gate = threading.Event()

    def slow(request: Request, sock: socket.socket) -> bool:
        gate.wait(5)
        return ok(b"{}")(request, sock)

    server.handlers += [slow] * count
    threads = [threading.Thread(target=send, args=(backend, server)) for _ in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 2
    while len(server.requests) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    gate.set()
    for thread in threads:
        thread.join(5)


def test_a_full_pool_opens_extra_connections_by_default(
    server: RawServer, backends: list[RequestsBackend]
) -> None:
    backend = backend_for(server, backends, http_pool_size=1)
    _concurrent_sends(backend, server, 3)
    assert len(server.requests) == 3
    assert server.connections == 3


def test_a_blocking_pool_waits_for_its_connection(
    server: RawServer, backends: list[RequestsBackend]
) -> None:
    backend = backend_for(server, backends, http_pool_size=1, http_pool_block=True)
    _concurrent_sends(backend, server, 3)
    assert len(server.requests) == 3
    assert server.connections == 1  # one connection, taken in turn


def _send_from_child(backend: RequestsBackend, url: str, queue: Any) -> None:
    reply = backend.send("GET", url + "/api/v1/x", {}, None, TIMEOUTS)
    queue.put(reply.status)


def test_forked_child_never_reuses_the_parents_connections(
    server: RawServer, backends: list[RequestsBackend]
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
