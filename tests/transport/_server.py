"""A small scriptable HTTP/1.1 server on 127.0.0.1 for transport tests.

Every request is recorded (method, target, headers, body, client port); the answer comes from
``server.route(request) -> Answer``. Answers can delay (interruptibly), reset the connection,
send chunked bodies or redirect. ``stop()`` closes every connection, so no handler thread
outlives the test.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass
class Seen:
    """One request as the server received it (header names lower-cased)."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    client_port: int


@dataclass
class Answer:
    """What to send back. ``reset`` aborts the connection instead (RST)."""

    status: int = 200
    body: bytes = b"{}"
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    reset: bool = False
    chunked: bool = False


def echo(seen: Seen) -> Answer:
    """Answer 200 with the request's method, target, headers and body length as JSON."""
    payload = {
        "method": seen.method,
        "target": seen.target,
        "headers": seen.headers,
        "body_length": len(seen.body),
    }
    return Answer(200, orjson.dumps(payload), {"Content-Type": "application/json"})


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        seen = Seen(
            self.command,
            self.path,
            {k.lower(): v for k, v in self.headers.items()},
            body,
            self.client_address[1],
        )
        owner = self.server.owner
        with owner.lock:
            owner.requests.append(seen)
        answer = owner.route(seen)
        if answer.delay and owner.stopping.wait(answer.delay):
            self.close_connection = True
            return
        if answer.reset:
            # RST instead of FIN: the client sees "connection reset".
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        if answer.chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(answer.body), 7):
                piece = answer.body[start : start + 7]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve  # noqa: N815


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: LocalServer

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.owner.lock:
            self.owner.connections.append(request)
        super().process_request(request, client_address)


class LocalServer:
    """Start with ``LocalServer(route)``; ``url`` is its base URL; ``stop()`` when done."""

    def __init__(
        self,
        route: Callable[[Seen], Answer] = echo,
        *,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.route = route
        self.requests: list[Seen] = []
        self.connections: list[socket.socket] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()

    def script(self, *answers: Answer, then: Callable[[Seen], Answer] = echo) -> None:
        """Answer the next requests with ``answers`` in order, then with ``then``."""
        queue = list(answers)

        def route(seen: Seen) -> Answer:
            with self.lock:
                if queue:
                    return queue.pop(0)
            return then(seen)

        self.route = route

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        with self.lock:
            connections = list(self.connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self._server.server_close()
        self._thread.join(timeout=5)
