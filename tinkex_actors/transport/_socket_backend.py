"""The default backend: HTTP/1.1 keep-alive connections on plain sockets to the base URL.

Why not urllib3 or ``http.client`` for the API calls: a Tinker call is two small exchanges
(submit, then ``retrieve_future``), so the client's cost per exchange is most of its latency.
Measured here (``python -m bench.transport``): urllib3's pool spends about 0.32 ms of CPU per
exchange, ``http.client`` about 0.21 ms (it parses every answer's headers with the ``email``
package and validates every header it sends), and this module about 0.06 ms: the request
head is written into one buffer, sent with the body in one ``sendall``, and the answer is read
by a small HTTP/1.1 parser over a buffered reader.

Scope: requests to the base URL's origin when no proxy is configured, i.e. every API call.
Everything else goes to an inner :class:`~tinkex_actors.transport.Urllib3Backend`: other
origins (signed download URLs), streamed downloads (:meth:`SocketBackend.open`) and every
request when ``Config.proxy`` is set.

The HTTP/1.1 subset read: a status line, headers (at most :data:`_MAX_HEADERS` lines of at most
:data:`_MAX_LINE` bytes; repeated names joined with ``", "``; obsolete line folding
unfolded), interim 1xx answers skipped, a body framed by ``Transfer-Encoding: chunked``,
``Content-Length`` or the end of the connection (none for HEAD, 1xx, 204 and 304), and
``Content-Encoding`` gzip / deflate / zstd (zstd when ``zstandard`` is installed; unknown
codings are left as sent, as urllib3 does). Anything else is a protocol error:
:class:`~tinkex_actors.errors.APIConnectionError`.

Connections: a LIFO stack of idle keep-alive sockets (thread-safe; at most
``Config.http_pool_size`` kept idle, more may be open while busy). A forked child starts with
an empty stack: it never writes into a connection its parent is using. Before a socket is reused it
is polled: one that became readable while idle (the server closed it, e.g. uvicorn after 5 s)
is dropped. If a reused socket still fails while the request is written, or ends cleanly
before the first byte of the answer (the server closed it just as the request left: the
keep-alive race), the request is sent once more on a new connection, provided that cannot run
it twice: idempotent methods, and requests carrying ``X-Idempotency-Key`` (every non-GET API
call does; the server answers a repeat with the first result), as Go's ``net/http`` does. A
reset after the request was written is an error like any other (the transport's retry policy
decides).
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import select
import socket
import ssl
import urllib.parse
import weakref
import zlib
from collections.abc import Callable, Mapping
from typing import Any, Final

from tinkex_actors import _constants as c
from tinkex_actors._redact import redact_url, scrub
from tinkex_actors.config import Config
from tinkex_actors.errors import APIConnectionError, APITimeoutError
from tinkex_actors.transport._backend import Urllib3Backend, tls_options
from tinkex_actors.transport._types import RawResponse, RawStream, Timeouts

__all__ = ["SocketBackend"]

_MAX_LINE: Final = 65_536
_MAX_HEADERS: Final = 200
_MESSAGE_LIMIT: Final = 300
# Bodies above this are sent apart from the head instead of being copied into one buffer.
_JOIN_LIMIT: Final = 64 * 1024
_BODYLESS_STATUS: Final = frozenset({204, 304})
_NEEDS_LENGTH: Final = frozenset({"POST", "PUT", "PATCH"})
_IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_UNSAFE: Final = re.compile(r"[\r\n\x00]")
_STALE_ERRORS: Final = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)
_IDEMPOTENCY_HEADER: Final = c.HEADER_IDEMPOTENCY_KEY.lower()
# Every live backend, so that a forked child can drop the connections it inherited.
_live: weakref.WeakSet[SocketBackend] = weakref.WeakSet()


class _Connection:
    """One keep-alive socket and its buffered reader. Used by one thread at a time."""

    __slots__ = ("poller", "reader", "sock", "timeout")

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb")
        self.timeout = timeout
        self.poller = select.poll()
        self.poller.register(sock.fileno(), select.POLLIN)

    def usable(self) -> bool:
        """False if the idle socket turned readable (closed by the server, or stray bytes)."""
        try:
            return not self.poller.poll(0)
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        for part in (self.reader, self.sock):
            with contextlib.suppress(OSError):
                part.close()


def _decoder(coding: str) -> Callable[[bytes], bytes] | None:
    if coding in ("gzip", "x-gzip"):
        return lambda data: _zlib(data, 16 + zlib.MAX_WBITS)
    if coding == "deflate":
        return _deflate
    if coding == "zstd":
        try:
            import zstandard
        except ImportError:
            return None

        def unzstd(data: bytes) -> bytes:
            out: bytes = zstandard.ZstdDecompressor().decompressobj().decompress(data)
            return out

        return unzstd
    return None


def _zlib(data: bytes, wbits: int) -> bytes:
    # Several gzip members in a row are one body (RFC 1952); decompressobj stops at each end.
    out = []
    while data:
        inflater = zlib.decompressobj(wbits)
        out.append(inflater.decompress(data))
        out.append(inflater.flush())
        data = inflater.unused_data
    return b"".join(out)


def _deflate(data: bytes) -> bytes:
    # "deflate" is a zlib stream by the RFC, but some servers send raw deflate.
    try:
        return zlib.decompress(data)
    except zlib.error:
        return zlib.decompress(data, -zlib.MAX_WBITS)


def _decode(body: bytes, codings: str) -> bytes:
    # Codings are listed in the order applied: undo them from the last.
    for coding in reversed([part.strip().lower() for part in codings.split(",")]):
        if coding in ("", "identity"):
            continue
        decode = _decoder(coding)
        if decode is None:
            return body
        try:
            body = decode(body)
        except Exception as exc:
            raise ValueError(f"could not decode a {coding} body: {exc}") from exc
    return body


class SocketBackend:
    """Keep-alive HTTP/1.1 on sockets for the base URL's origin; thread-safe.

    Args:
        config: the tenant (base URL, TLS settings, proxy, pool size).
    """

    def __init__(self, config: Config) -> None:
        self._fallback = Urllib3Backend(config)
        self._secrets: tuple[str, ...] = tuple(
            s for s in (config.api_key, config.cf_access_client_secret, config.proxy) if s
        )
        self._idle: collections.deque[_Connection] = collections.deque()
        self._max_idle = config.http_pool_size
        self._closed = False
        parts = urllib.parse.urlsplit(config.base_url)
        self._direct = config.proxy is None and parts.scheme in ("http", "https")
        self._prefix = f"{parts.scheme}://{parts.netloc}"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._host_header = parts.netloc.rsplit("@", 1)[-1]
        self._tls: ssl.SSLContext | None = None
        if self._direct and parts.scheme == "https":
            self._tls = _tls_context(config)
        _live.add(self)

    # ------------------------------------------------------------------ backend API
    def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeouts: Timeouts,
    ) -> RawResponse:
        """Send one request and read the whole answer (see ``Backend.send``)."""
        prefix = self._prefix
        direct = self._direct and url.startswith(prefix)
        if not direct or url[len(prefix) : len(prefix) + 1] != "/":
            return self._fallback.send(method, url, headers, body, timeouts)
        head = self._head(method, url[len(prefix) :], headers, body)
        payload: bytes | None = None
        if body and len(body) <= _JOIN_LIMIT:
            head, payload = head + body, None
        else:
            payload = body or None
        replay = (
            method in _IDEMPOTENT
            or c.HEADER_IDEMPOTENCY_KEY in headers
            or any(name.lower() == _IDEMPOTENCY_HEADER for name in headers)
        )
        while True:
            conn, reused = self._checkout(timeouts, url)
            try:
                if conn.timeout != timeouts.read:
                    conn.sock.settimeout(timeouts.read)
                    conn.timeout = timeouts.read
                try:
                    conn.sock.sendall(head)
                    if payload is not None:
                        conn.sock.sendall(payload)
                except _STALE_ERRORS:
                    if not (reused and replay):
                        raise
                    conn.close()
                    continue  # a keep-alive socket the server had just closed: once more, fresh
                answered = _read_answer(conn.reader, method)
            except (OSError, ValueError) as exc:
                conn.close()
                raise self._error(exc, url) from exc
            except BaseException:
                conn.close()
                raise
            if answered is None:  # closed before the first byte of the answer
                conn.close()
                if reused and replay:
                    continue
                raise APIConnectionError(
                    f"connection to {redact_url(url)} failed: the server closed the "
                    "connection without answering"
                )
            status, answer, data, keep = answered
            if keep:
                self._checkin(conn)
            else:
                conn.close()
            return RawResponse(status, answer, data)

    def open(
        self, method: str, url: str, headers: Mapping[str, str], timeouts: Timeouts
    ) -> RawStream:
        """Streamed downloads go through urllib3 (see ``Backend.open``)."""
        return self._fallback.open(method, url, headers, timeouts)

    def close(self) -> None:
        """Close every idle connection (busy ones close when their exchange ends)."""
        self._closed = True
        self._drain()
        self._fallback.close()

    # ------------------------------------------------------------------ connections
    def _checkout(self, timeouts: Timeouts, url: str) -> tuple[_Connection, bool]:
        idle = self._idle
        while True:
            try:
                conn = idle.pop()
            except IndexError:
                break
            if conn.usable():
                return conn, True
            conn.close()
        return self._connect(timeouts, url), False

    def _connect(self, timeouts: Timeouts, url: str) -> _Connection:
        try:
            sock = socket.create_connection((self._host, self._port), timeout=timeouts.connect)
        except TimeoutError as exc:
            raise self._error(exc, url) from exc
        except OSError as exc:
            raise APIConnectionError(
                f"could not connect to {redact_url(url)}: {self._detail(exc, url)}"
            ) from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self._host)
            sock.settimeout(timeouts.read)
        except OSError as exc:  # ssl.SSLError included
            sock.close()
            raise self._error(exc, url) from exc
        return _Connection(sock, timeouts.read)

    def _checkin(self, conn: _Connection) -> None:
        idle = self._idle
        idle.append(conn)
        if len(idle) > self._max_idle:
            with contextlib.suppress(IndexError):
                idle.popleft().close()
        if self._closed:
            self._drain()  # close() ran while this exchange was busy

    def _forget(self) -> None:
        # In a forked child: close this process's copies of the inherited sockets (the
        # parent's connections stay open: no FIN until every copy is closed) and start afresh.
        inherited, self._idle = self._idle, collections.deque()
        for conn in inherited:
            conn.close()

    def _drain(self) -> None:
        with contextlib.suppress(IndexError):
            while True:
                self._idle.pop().close()

    # ------------------------------------------------------------------ helpers
    def _head(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None
    ) -> bytes:
        if _UNSAFE.search(f"{target}{''.join(headers)}{''.join(headers.values())}"):
            raise APIConnectionError("refused to send a header or path holding CR, LF or NUL")
        lines = [f"{method} {target} HTTP/1.1\r\nHost: {self._host_header}\r\n"]
        lines += [f"{name}: {value}\r\n" for name, value in headers.items()]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}\r\n")
        elif method in _NEEDS_LENGTH:
            lines.append("Content-Length: 0\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("latin-1")

    def _detail(self, exc: BaseException, url: str) -> str:
        query = urllib.parse.urlsplit(url).query
        text = f"{type(exc).__name__}: {exc}"
        return scrub(text, (*self._secrets, query))[:_MESSAGE_LIMIT]

    def _error(self, exc: BaseException, url: str) -> APIConnectionError:
        target = redact_url(url)
        detail = self._detail(exc, url)
        if isinstance(exc, TimeoutError):
            return APITimeoutError(f"timed out talking to {target}: {detail}")
        if type(exc) is ValueError:
            detail = f"unreadable answer: {exc}"[:_MESSAGE_LIMIT]
        return APIConnectionError(f"connection to {target} failed: {detail}")


def _tls_context(config: Config) -> ssl.SSLContext:
    options: dict[str, Any] = tls_options(config)
    if options["cert_reqs"] == "CERT_NONE":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(
            cafile=options.get("ca_certs"), capath=options.get("ca_cert_dir")
        )
    context.set_alpn_protocols(["http/1.1"])
    return context


def _readline(reader: Any) -> bytes:
    line: bytes = reader.readline(_MAX_LINE + 1)
    if len(line) > _MAX_LINE:
        raise ValueError(f"a line of the answer is longer than {_MAX_LINE} bytes")
    return line


def _read_answer(reader: Any, method: str) -> tuple[int, dict[str, str], bytes, bool] | None:
    """Read one answer: ``(status, headers by lower-case name, body, reusable)``.

    Returns None when the connection ended before the answer's first byte. A malformed answer
    raises ValueError.
    """
    first = True
    while True:
        line = _readline(reader)
        if not line:
            if first:
                return None
            raise ValueError("the connection closed before the answer's status line")
        first = False
        version, _, rest = line.partition(b" ")
        code = rest[:3]
        if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise ValueError(f"not an HTTP/1.x status line: {line[:80]!r}")
        status = int(code)
        headers = _read_headers(reader)
        if 100 <= status < 200:
            if status == 101:
                raise ValueError("the server switched protocols (101)")
            continue  # interim answer (100 Continue, 103 Early Hints): the real one follows
        break
    connection = headers.get("connection", "").lower()
    keep = "keep-alive" in connection if version == b"HTTP/1.0" else "close" not in connection
    if method == "HEAD" or status in _BODYLESS_STATUS:
        body = b""
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        body = _read_chunked(reader)
    elif "content-length" in headers:
        body = _read_length(reader, headers["content-length"])
    else:
        body = reader.read()  # framed by the end of the connection
        keep = False
    coding = headers.get("content-encoding")
    if coding and body:
        body = _decode(body, coding)
    return status, headers, body, keep


def _read_headers(reader: Any) -> dict[str, str]:
    headers: dict[str, str] = {}
    last = ""
    for _ in range(_MAX_HEADERS + 1):
        line = _readline(reader)
        if line in (b"\r\n", b"\n"):
            return headers
        if not line:
            raise ValueError("the connection closed inside the answer's headers")
        text = line.decode("latin-1").rstrip("\r\n")
        if text[:1] in (" ", "\t"):
            if not last:
                raise ValueError("an answer's header starts with whitespace")
            headers[last] = f"{headers[last]} {text.strip()}"  # obsolete line folding
            continue
        name, sep, value = text.partition(":")
        name = name.strip().lower()
        if not sep or not name:
            raise ValueError(f"malformed header line: {text[:80]!r}")
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
        last = name
    raise ValueError(f"the answer has more than {_MAX_HEADERS} header lines")


def _read_length(reader: Any, text: str) -> bytes:
    values = {part.strip() for part in text.split(",")}
    if len(values) != 1 or not (length := values.pop()).isdigit():
        raise ValueError(f"bad Content-Length: {text[:40]!r}")
    want = int(length)
    body: bytes = reader.read(want)
    if len(body) != want:
        raise ValueError(f"the answer ended after {len(body)} of {want} bytes")
    return body


def _read_chunked(reader: Any) -> bytes:
    parts = []
    while True:
        line = _readline(reader)
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ValueError(f"bad chunk size line: {line[:40]!r}") from None
        if size < 0:
            raise ValueError(f"bad chunk size line: {line[:40]!r}")
        if size == 0:
            break
        chunk = reader.read(size)
        if len(chunk) != size or reader.read(2) not in (b"\r\n",):
            raise ValueError("the answer ended inside a chunk")
        parts.append(chunk)
    _read_headers(reader)  # trailers, if any, until the blank line
    return b"".join(parts)


def _after_fork_in_child() -> None:
    for backend in list(_live):
        backend._forget()


os.register_at_fork(after_in_child=_after_fork_in_child)
