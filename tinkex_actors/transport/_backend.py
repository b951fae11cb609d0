"""The default backend: urllib3 connection pools (the engine under ``requests``), used directly.

Why not ``requests.Session``: a Session is not documented as thread-safe, and each
``Session.request`` merges environment settings, cookies and hooks; even an
``HTTPAdapter.send`` of a prepared request builds a ``requests.Response`` and a cookie jar per
answer. Measured here (``bench/bench_transport.py``) that costs ~0.5-1.0 ms of CPU per
exchange, against ~0.3 ms for urllib3's pool. urllib3's pools are thread-safe (a LIFO queue of
keep-alive connections per origin), so one backend serves every thread of a tenant.
:class:`~tinkex_actors.transport.RequestsBackend` offers the ``requests`` stack instead.

No per-call environment lookups: proxies come only from ``Config.proxy``; CA certificates
from ``Config.ca_bundle`` or certifi's bundle.
"""

from __future__ import annotations

import functools
import http.client
import os
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any

import certifi
import urllib3
from urllib3 import exceptions as u3e

from tinkex_actors._redact import redact_url, scrub
from tinkex_actors.config import Config
from tinkex_actors.errors import APIConnectionError, APITimeoutError
from tinkex_actors.transport._types import RawResponse, Timeouts

__all__ = ["NETWORK_ERRORS", "Urllib3Backend", "network_error", "tls_options"]

# Pools kept for origins other than the base URL's (signed download URLs): few and small.
_FOREIGN_POOLS = 4
_FOREIGN_POOL_SIZE = 4
_MESSAGE_LIMIT = 300


def tls_options(config: Config) -> dict[str, Any]:
    """urllib3 pool options for ``config``'s certificate checking."""
    if not config.verify_tls:
        return {"cert_reqs": "CERT_NONE", "assert_hostname": False}
    bundle = config.ca_bundle
    if bundle is not None and os.path.isdir(bundle):
        return {"cert_reqs": "CERT_REQUIRED", "ca_cert_dir": bundle}
    return {"cert_reqs": "CERT_REQUIRED", "ca_certs": bundle or certifi.where()}


def network_error(exc: BaseException, url: str, secrets: tuple[str, ...]) -> APIConnectionError:
    """Translate a network-level exception into ``APITimeoutError`` / ``APIConnectionError``.

    The message names the (redacted) URL and the failure; it never holds credentials or a
    signed URL's query string.
    """
    target = redact_url(url)
    query = urllib.parse.urlsplit(url).query
    detail = scrub(f"{type(exc).__name__}: {exc}", (*secrets, query))[:_MESSAGE_LIMIT]
    if isinstance(exc, u3e.NewConnectionError):
        return APIConnectionError(f"could not connect to {target}: {detail}")
    if isinstance(exc, u3e.TimeoutError | TimeoutError):
        return APITimeoutError(f"timed out talking to {target}: {detail}")
    return APIConnectionError(f"connection to {target} failed: {detail}")


#: What a network failure may raise below urllib3's own wrapping.
NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    u3e.HTTPError,
    http.client.HTTPException,
    OSError,
)


@functools.lru_cache(maxsize=64)
def _timeout(connect: float, read: float) -> urllib3.Timeout:
    return urllib3.Timeout(connect=connect, read=read)


class _Stream:
    """A urllib3 answer read lazily (see :class:`~tinkex_actors.transport.RawStream`)."""

    __slots__ = ("_done", "_response", "_secrets", "_url", "headers", "status")

    def __init__(self, response: urllib3.BaseHTTPResponse, url: str, secrets: tuple[str, ...]):
        self._response = response
        self._url = url
        self._secrets = secrets
        self._done = False
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers

    def chunks(self, size: int) -> Iterator[bytes]:
        try:
            yield from self._response.stream(size, decode_content=True)
        except NETWORK_ERRORS as exc:
            raise network_error(exc, self._url, self._secrets) from exc
        self._done = True

    def close(self) -> None:
        if not self._done:
            # An unread body would poison the connection for the next request.
            self._response.close()
        self._response.release_conn()


class Urllib3Backend:
    """Pooled keep-alive HTTP(S) through urllib3; thread-safe.

    One pool for the base URL's origin (looked up once, not per call), a few small pools for
    other origins, all with ``Config``'s TLS, proxy and pool-size settings.
    """

    def __init__(self, config: Config) -> None:
        tls = tls_options(config)
        self._secrets: tuple[str, ...] = tuple(
            s for s in (config.api_key, config.cf_access_client_secret, config.proxy) if s
        )
        self._manager: urllib3.PoolManager
        if config.proxy is not None:
            proxy = urllib.parse.urlsplit(config.proxy)
            proxy_headers: dict[str, str] = {}
            if proxy.username is not None:
                userinfo = urllib.parse.unquote(proxy.username)
                if proxy.password is not None:
                    userinfo += ":" + urllib.parse.unquote(proxy.password)
                proxy_headers = urllib3.make_headers(proxy_basic_auth=userinfo)
                self._secrets += (userinfo,)
            bare = proxy._replace(netloc=proxy.netloc.rsplit("@", 1)[-1]).geturl()
            self._manager = urllib3.ProxyManager(
                bare,
                num_pools=_FOREIGN_POOLS + 1,
                maxsize=config.http_pool_size,
                block=False,
                proxy_headers=proxy_headers,
                **tls,
            )
        else:
            self._manager = urllib3.PoolManager(
                num_pools=_FOREIGN_POOLS, maxsize=_FOREIGN_POOL_SIZE, block=False, **tls
            )
        # Fast path: requests to the base origin skip the manager's URL parsing and lookup.
        parts = urllib.parse.urlsplit(config.base_url)
        self._prefix = f"{parts.scheme}://{parts.netloc}"
        self._base_pool: urllib3.HTTPConnectionPool | None = None
        if config.proxy is None:
            https = parts.scheme == "https"
            pool_class = urllib3.HTTPSConnectionPool if https else urllib3.HTTPConnectionPool
            options = tls if https else {}
            self._base_pool = pool_class(
                parts.hostname or "",
                parts.port,
                maxsize=config.http_pool_size,
                block=False,
                retries=False,
                **options,
            )

    def _route(self, url: str) -> tuple[Any, str]:
        prefix = self._prefix
        if (
            self._base_pool is not None
            and url.startswith(prefix)
            and url[len(prefix) : len(prefix) + 1] == "/"
        ):
            return self._base_pool, url[len(prefix) :]
        return self._manager, url

    def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeouts: Timeouts,
    ) -> RawResponse:
        """Send one request and read the whole answer (see ``Backend.send``)."""
        target, where = self._route(url)
        try:
            response = target.urlopen(
                method,
                where,
                body=body,
                headers=headers,
                retries=False,
                redirect=False,
                assert_same_host=False,
                timeout=_timeout(*timeouts),
                preload_content=True,
                decode_content=True,
            )
        except NETWORK_ERRORS as exc:
            raise network_error(exc, url, self._secrets) from exc
        # HTTPHeaderDict: case-insensitive lookups without building a new dict per answer.
        return RawResponse(response.status, response.headers, response.data)

    def open(
        self, method: str, url: str, headers: Mapping[str, str], timeouts: Timeouts
    ) -> _Stream:
        """Send one bodiless request; the answer's body is read later (see ``Backend.open``)."""
        target, where = self._route(url)
        try:
            response = target.urlopen(
                method,
                where,
                headers=headers,
                retries=False,
                redirect=False,
                assert_same_host=False,
                timeout=_timeout(*timeouts),
                preload_content=False,
                decode_content=True,
            )
        except NETWORK_ERRORS as exc:
            raise network_error(exc, url, self._secrets) from exc
        return _Stream(response, url, self._secrets)

    def close(self) -> None:
        """Close every pooled connection."""
        if self._base_pool is not None:
            self._base_pool.close()
        self._manager.clear()
