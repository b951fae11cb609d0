"""Streaming downloads (``HTTPTransport.stream``): credentials only for the base origin.

Every hop (the first URL and each redirect) gets the tenant's credentials only when its
origin (scheme, host, port) is the base URL's; signed URLs on other hosts get ``User-Agent``
and ``Accept`` alone. Retries apply until the body starts; then failures go to the caller.
"""

from __future__ import annotations

import contextlib
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from tinkex_actors import _constants as c
from tinkex_actors import telemetry
from tinkex_actors._scalar_checks import positive_int
from tinkex_actors.errors import (
    BODY_EXCERPT_LIMIT,
    APIConnectionError,
    APIError,
    ClientClosedError,
    ValidationError,
)
from tinkex_actors.transport._checks import check_headers, check_retries, check_timeout
from tinkex_actors.transport._headers import USER_AGENT, merge_header, origin
from tinkex_actors.transport._retry import call_with_retries
from tinkex_actors.transport._types import RawResponse, RawStream, StreamResponse, Timeouts

if TYPE_CHECKING:
    from tinkex_actors.transport._http import HTTPTransport

__all__ = ["REDIRECTS", "open_stream"]

REDIRECTS = frozenset({301, 302, 303, 307, 308})


@contextlib.contextmanager
def open_stream(
    transport: HTTPTransport,
    url: str,
    *,
    method: str,
    headers: Mapping[str, str] | None,
    accept: str,
    timeout: float | None,
    max_retries: int | None,
    chunk_size: int,
) -> Iterator[StreamResponse]:
    """The body of :meth:`HTTPTransport.stream` (see there)."""
    if transport.closed:
        raise ClientClosedError("the HTTP transport of this client was closed")
    if method not in ("GET", "HEAD"):
        raise ValidationError(f"must be GET or HEAD, got {method!r}", field="method")
    url = _stream_url(transport, url)
    chunk_size = positive_int(chunk_size, "chunk_size")
    extra = dict(check_headers(headers)) if headers else {}
    timeouts = transport._timeouts
    if timeout is not None:
        timeouts = Timeouts(timeouts.connect, check_timeout(timeout))
    retries = transport.config.max_retries if max_retries is None else check_retries(max_retries)
    path = urllib.parse.urlsplit(url).path or "/"
    meta = transport._start(method, path, None, None)
    start = time.monotonic_ns()
    raw, final_url = _open(
        transport, url, method, accept, extra, timeouts, retries, meta, path, start
    )
    try:
        yield StreamResponse(raw, final_url, chunk_size)
    finally:
        raw.close()


def _stream_url(transport: HTTPTransport, url: object) -> str:
    if isinstance(url, str) and url.startswith("/"):
        return transport.url(url)
    if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
        raise ValidationError("must be a path or an absolute http(s) URL", field="url")
    try:
        origin(url)
    except ValueError:
        raise ValidationError("not an absolute http(s) URL with a host", field="url") from None
    return url


def _hop_headers(
    transport: HTTPTransport, url: str, accept: str, extra: Mapping[str, str]
) -> dict[str, str]:
    same = origin(url) == transport._origin
    sent = transport.origin_headers() if same else {"User-Agent": USER_AGENT}
    sent["Accept"] = accept
    for name, value in extra.items():
        merge_header(sent, name, value)
    return sent


def _next_hop(url: str, location: str | None) -> str | None:
    if not location:
        return None
    target = urllib.parse.urljoin(url, location)
    try:
        origin(target)
    except ValueError:
        return None  # not http(s): answered as the 3xx it is
    return target


def _open(
    transport: HTTPTransport,
    url: str,
    method: str,
    accept: str,
    extra: Mapping[str, str],
    timeouts: Timeouts,
    retries: int,
    meta: dict[str, Any] | None,
    path: str,
    start: int,
) -> tuple[RawStream, str]:
    taken = [0]
    replayed = [False]  # a refused credential earns one replay per download
    auth = transport.auth

    def attempt(number: int) -> tuple[RawStream, str]:
        taken[0] = number
        hop = url
        redirects = 0
        while True:
            sent = _hop_headers(transport, hop, accept, extra)
            raw = transport._backend.open(method, hop, sent, timeouts)
            status = raw.status
            rejected = sent.get(c.HEADER_API_KEY)
            if rejected is not None and not replayed[0] and auth.should_renew(status, raw.headers):
                raw.close()
                replayed[0] = True
                auth.renew(rejected)  # the next pass of the loop sends the fresh one
                continue
            if 200 <= status < 300:
                if meta is not None:
                    end = time.monotonic_ns()
                    telemetry.execute(
                        telemetry.HTTP_REQUEST_STOP,
                        {"duration": end - start, "monotonic_time": end},
                        {**meta, "status": status, "retry_count": number},
                    )
                return raw, hop
            target = _next_hop(hop, raw.headers.get("location")) if status in REDIRECTS else None
            if target is not None and redirects < c.HTTP_MAX_REDIRECTS:
                raw.close()
                redirects += 1
                hop = target
                continue
            error_raw = RawResponse(status, raw.headers, _read_excerpt(raw))
            raise transport._status_error(error_raw, method, path, None)

    def on_retry(number: int, error: APIError, delay: float) -> None:
        transport._before_retry(number, error, delay, meta, method, path)

    try:
        return call_with_retries(
            attempt,
            policy=transport._policy,
            max_retries=retries,
            sleep=transport._sleep,
            on_retry=on_retry,
            uniform=transport._uniform,
            wall_clock=transport._wall_clock,
        )
    except APIError as exc:
        exc.method, exc.path = method, path
        transport._give_up(exc, taken[0], start, meta, retries)
        raise


def _read_excerpt(raw: RawStream) -> bytes:
    # Keep only what an error message can show, then drop the connection.
    data = b""
    try:
        for chunk in raw.chunks(4096):
            data += chunk
            if len(data) > 2 * BODY_EXCERPT_LIMIT:
                break
    except APIConnectionError:
        pass
    finally:
        raw.close()
    return data
