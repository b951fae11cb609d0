"""The transport's data types and the low-level backend contract.

A *backend* moves bytes: one HTTP exchange, no retries, no redirects, no policy. The
:class:`~tinkex_actors.transport.HTTPTransport` adds headers, retries, redirects, errors and
telemetry on top. Tests inject a fake backend (see :mod:`tinkex_actors.testing`) to script
faults without a server.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple, Protocol

import attrs
import orjson

from tinkex_actors.errors import ResponseDecodeError

__all__ = ["Backend", "RawResponse", "RawStream", "Response", "StreamResponse", "Timeouts"]


class Timeouts(NamedTuple):
    """Seconds allowed to connect, and to wait for each read of the answer."""

    connect: float
    read: float


class RawResponse(NamedTuple):
    """One HTTP answer as a backend returns it.

    ``headers`` answers lookups by lower-case name (a case-insensitive mapping, or a dict with
    lower-case keys); repeated headers are joined with ``", "``.
    """

    status: int
    headers: Mapping[str, str]
    body: bytes


class RawStream(Protocol):
    """An answer whose body has not been read yet (see :meth:`Backend.open`)."""

    @property
    def status(self) -> int:
        """The HTTP status."""
        ...

    @property
    def headers(self) -> Mapping[str, str]:
        """Response headers (lookups by lower-case name work, as in ``RawResponse``)."""
        ...

    def chunks(self, size: int) -> Iterator[bytes]:
        """Yield the body in pieces of at most ``size`` bytes; raise like :meth:`Backend.send`."""
        ...

    def close(self) -> None:
        """Release the connection (closing it when the body was not read to the end)."""
        ...


class Backend(Protocol):
    """A low-level HTTP sender: one exchange per call, thread-safe.

    Implementations raise :class:`~tinkex_actors.errors.APITimeoutError` when connecting or
    reading timed out and :class:`~tinkex_actors.errors.APIConnectionError` for every other
    network failure (refused, reset, TLS, proxy); they never follow redirects, never retry and
    never raise their library's own exceptions. Any other exception is a bug and propagates.
    """

    def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeouts: Timeouts,
    ) -> RawResponse:
        """Send one request and read the whole answer."""
        ...

    def open(
        self, method: str, url: str, headers: Mapping[str, str], timeouts: Timeouts
    ) -> RawStream:
        """Send one bodiless request and return the answer with its body unread."""
        ...

    def close(self) -> None:
        """Close every pooled connection; the backend is not used afterwards."""
        ...


@attrs.frozen
class Response:
    """A 2xx (or, with ``follow_redirects=False``, 3xx) answer to :meth:`HTTPTransport.request`.

    Attributes:
        status_code: the HTTP status.
        headers: response headers; look them up by lower-case name (``headers.get("etag")``)
            or use :meth:`header`, which ignores case.
        content: the body (already decompressed when the server compressed it).
        elapsed: seconds from the first attempt's start to the end, retries included.
        retries_taken: transport-level retries before this answer (0 on first success).
        method: the request's method.
        path: the request's path (no host, no query).
    """

    status_code: int
    # Not in repr: bodies can be large, and a server may echo anything back.
    headers: Mapping[str, str] = attrs.field(repr=False)
    content: bytes = attrs.field(repr=lambda body: f"<{len(body)} bytes>")
    elapsed: float
    retries_taken: int
    method: str
    path: str

    def header(self, name: str) -> str | None:
        """Return the header ``name`` (any case), or None."""
        return self.headers.get(name.lower())

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower-case (``""`` when absent)."""
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    def json(self) -> Any:
        """Decode the body as JSON.

        Raises:
            ResponseDecodeError: the body is not valid JSON (carries an excerpt of it).
        """
        try:
            return orjson.loads(self.content)
        except orjson.JSONDecodeError as exc:
            raise ResponseDecodeError(
                f"{self.method} {self.path}: invalid JSON ({exc})",
                body=self.content,
                expected="JSON",
                method=self.method,
                path=self.path,
            ) from None


class StreamResponse:
    """A 2xx answer whose body is read in chunks (yielded by :meth:`HTTPTransport.stream`).

    Iterate over it (or call :meth:`iter_bytes`) to get the body chunk by chunk; it can be read
    once. It is closed when the ``with`` block of :meth:`HTTPTransport.stream` ends.

    Attributes:
        status_code: the HTTP status.
        headers: response headers (look up by lower-case name).
        content_length: the announced body size, or None.
        url: the URL that answered (after redirects), as given (it may hold a signature).
    """

    __slots__ = ("_chunk_size", "_raw", "content_length", "headers", "status_code", "url")

    def __init__(self, raw: RawStream, url: str, chunk_size: int) -> None:
        self._raw = raw
        self._chunk_size = chunk_size
        self.status_code = raw.status
        self.headers = raw.headers
        self.url = url
        length = raw.headers.get("content-length")
        self.content_length = int(length) if length is not None and length.isdigit() else None

    def iter_bytes(self) -> Iterator[bytes]:
        """Yield the body in chunks (network errors raise ``APIConnectionError``)."""
        return self._raw.chunks(self._chunk_size)

    def __iter__(self) -> Iterator[bytes]:
        return self.iter_bytes()

    def read(self) -> bytes:
        """Read the whole remaining body into memory."""
        return b"".join(self.iter_bytes())

    def __repr__(self) -> str:
        return f"StreamResponse(status_code={self.status_code}, length={self.content_length})"
