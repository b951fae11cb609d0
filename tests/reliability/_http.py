"""Just enough HTTP/1.1 framing for the fault proxy: read one request or one response.

Messages are kept as raw bytes (head and body) so the proxy can relay them exactly, cut them
short, or replace them. Bodies are framed by ``Content-Length`` or chunked transfer coding
(kept raw, chunk headers included); a response with neither ends at EOF.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

__all__ = ["Message", "HTTPFramingError", "read_request", "read_response", "render_response"]

#: The largest head (request or status line plus headers) accepted.
HEAD_LIMIT = 64 * 1024
_REASONS = {
    200: "OK",
    400: "Bad Request",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class HTTPFramingError(Exception):
    """The peer sent something that is not HTTP/1.1 as this proxy understands it."""


@dataclass
class Message:
    """One request or response.

    Attributes:
        start: the request line (``POST /api/v1/x HTTP/1.1``) or status line.
        headers: ``(name, value)`` pairs in order, names as sent.
        body: the body bytes as framed on the wire (chunked bodies keep their chunk headers).
        decoded: the body without transfer coding (equal to ``body`` unless chunked).
    """

    start: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    decoded: bytes = b""

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive)."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def without(self, *names: str) -> list[tuple[str, str]]:
        """The headers minus ``names`` (case-insensitive)."""
        dropped = {n.lower() for n in names}
        return [(k, v) for k, v in self.headers if k.lower() not in dropped]

    def head_bytes(self, headers: list[tuple[str, str]] | None = None) -> bytes:
        """The start line and ``headers`` (default: this message's) as wire bytes."""
        lines = [self.start, *(f"{k}: {v}" for k, v in headers or self.headers)]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    @property
    def method(self) -> str:
        return self.start.split(" ", 1)[0]

    @property
    def target(self) -> str:
        parts = self.start.split(" ")
        return parts[1] if len(parts) > 1 else ""

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def status(self) -> int:
        parts = self.start.split(" ")
        try:
            return int(parts[1])
        except (IndexError, ValueError):
            raise HTTPFramingError(f"bad status line {self.start!r}") from None

    @property
    def keep_alive(self) -> bool:
        value = (self.header("connection") or "").lower()
        return "close" not in value


async def _head(reader: asyncio.StreamReader) -> Message | None:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None  # a clean end of the connection between messages
        raise HTTPFramingError("connection ended inside a message head") from None
    except asyncio.LimitOverrunError:
        raise HTTPFramingError("message head too large") from None
    lines = raw.decode("latin-1").split("\r\n")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise HTTPFramingError(f"bad header line {line!r}")
        headers.append((name.strip(), value.strip()))
    return Message(lines[0], headers)


async def _chunked(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    raw = bytearray()
    decoded = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        raw += size_line
        size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while True:  # trailers, then the blank line
                trailer = await reader.readuntil(b"\r\n")
                raw += trailer
                if trailer == b"\r\n":
                    return bytes(raw), bytes(decoded)
        data = await reader.readexactly(size + 2)
        raw += data
        decoded += data[:-2]


async def _body(reader: asyncio.StreamReader, message: Message, *, until_eof: bool) -> None:
    if "chunked" in (message.header("transfer-encoding") or "").lower():
        message.body, message.decoded = await _chunked(reader)
        return
    length = message.header("content-length")
    if length is not None:
        message.body = message.decoded = await reader.readexactly(int(length))
    elif until_eof:
        message.body = message.decoded = await reader.read()


async def read_request(reader: asyncio.StreamReader) -> Message | None:
    """The next request on a client connection (None at a clean EOF)."""
    message = await _head(reader)
    if message is not None:
        await _body(reader, message, until_eof=False)
    return message


async def read_response(reader: asyncio.StreamReader, method: str) -> Message:
    """The response to a ``method`` request."""
    message = await _head(reader)
    if message is None:
        raise HTTPFramingError("the upstream closed the connection without answering")
    status = message.status
    if method != "HEAD" and status >= 200 and status not in (204, 304):
        await _body(reader, message, until_eof=True)
    return message


def render_response(
    status: int, body: bytes, headers: list[tuple[str, str]] | None = None
) -> bytes:
    """A complete keep-alive response."""
    start = f"HTTP/1.1 {status} {_REASONS.get(status, 'Injected')}"
    all_headers = [
        ("content-type", "application/json"),
        ("content-length", str(len(body))),
        *(headers or []),
    ]
    return Message(start, all_headers).head_bytes() + body
