"""The HTTP backend: one ``requests.Session`` per tenant, sending prepared requests.

Built once per tenant, then only read: a Session with an ``HTTPAdapter`` sized from
``Config`` (connections per host, whether to block when they are all busy, no retries of its
own), TLS verification from ``Config.verify_tls`` / ``Config.ca_bundle``, proxies from
``Config.proxy`` or, when that is unset, from the environment read once (``HTTPS_PROXY``,
``HTTP_PROXY``, ``ALL_PROXY``, ``NO_PROXY``). ``trust_env`` is off, so no call looks at the
environment or ``.netrc`` again, and requests are sent with ``Session.send`` as prepared by the
transport (headers built once per tenant; no per-call merge of session settings).

Every answer is read with ``stream=True`` and a size bound (``Config.max_response_bytes``),
so a huge or lying ``Content-Length`` raises :class:`ResponseTooLargeError` instead of
exhausting memory. Network failures, TLS and proxy errors, malformed answers (a bad status
line or chunk size) become :class:`APIConnectionError` / :class:`APITimeoutError`; nothing
from requests, urllib3 or ``http.client`` leaves this module.

Thread-safety: ``Session.send`` with prepared requests touches only the adapter's pools
(thread-safe: urllib3 keeps a queue of connections per host) and the cookie jar (locked;
and our jar refuses every cookie). One backend serves every thread of its tenant.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import http.cookiejar
import os
import threading
import urllib.parse
import urllib.request
import weakref
from collections.abc import Iterator, Mapping
from typing import Any, Final

import requests
import requests.adapters
import requests.exceptions
import requests.utils
import urllib3
import urllib3.connection
import urllib3.exceptions

from tinkex_actors._redact import redact_url, scrub
from tinkex_actors.config import Config
from tinkex_actors.errors import APIConnectionError, APITimeoutError, ResponseTooLargeError
from tinkex_actors.transport._types import RawResponse, Timeouts

__all__ = ["NETWORK_ERRORS", "RequestsBackend", "interrupt_threads"]

# Host pools kept per tenant: the base URL's, plus a few for signed download URLs.
_HOST_POOLS: Final = 8
_READ_CHUNK: Final = 64 * 1024
_MESSAGE_LIMIT: Final = 300

#: What a network failure may raise below requests' own wrapping.
NETWORK_ERRORS: Final[tuple[type[BaseException], ...]] = (
    requests.exceptions.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
)
#: ... and while reading a body: a malformed chunk size (e.g. negative) reaches
#: ``http.client`` as a bad read length, a ValueError.
_READ_ERRORS: Final[tuple[type[BaseException], ...]] = (*NETWORK_ERRORS, ValueError)

# Every live backend, so that a forked child drops the connections it inherited.
_live: weakref.WeakSet[RequestsBackend] = weakref.WeakSet()
_fork_hook_lock = threading.Lock()
_fork_hook_installed = False


def _install_fork_hook() -> None:
    # Registered lazily (not at import): os.register_at_fork is POSIX-only.
    global _fork_hook_installed
    with _fork_hook_lock:
        if _fork_hook_installed:
            return
        _fork_hook_installed = True
    register = getattr(os, "register_at_fork", None)
    if register is not None:
        register(after_in_child=_after_fork_in_child)


def _after_fork_in_child() -> None:
    for backend in list(_live):
        backend._forget_connections()


class _ProxyChoice:
    """Which proxy a URL goes through: ``Config.proxy``, else the environment's choice.

    The environment is read with requests' own rules (``HTTPS_PROXY``, ``HTTP_PROXY``,
    ``ALL_PROXY``, ``NO_PROXY`` with host suffixes, ports and CIDR ranges), once per origin
    (scheme, host, port) and tenant, never per request.
    """

    __slots__ = ("_fixed", "for_origin", "secrets")

    def __init__(self, config: Config) -> None:
        self._fixed: dict[str, str] | None = (
            {"http": config.proxy, "https": config.proxy} if config.proxy else None
        )
        # Proxy URLs may hold credentials: scrubbed from every message.
        urls = [config.proxy] if config.proxy else list(urllib.request.getproxies().values())
        self.secrets = tuple(url for url in urls if url and "://" in url)
        self.for_origin = functools.lru_cache(maxsize=64)(self._decide)

    def _decide(self, scheme: str, netloc: str) -> dict[str, str]:
        if self._fixed is not None:
            return self._fixed
        return requests.utils.get_environ_proxies(f"{scheme}://{netloc}/")


# ---------------------------------------------------------------------------- interrupting
# Connections that carried a request, with the thread that sent it last: closing a client
# shuts down the sockets its threads are blocked on (a long poll holds for ~30 s), so its
# threads end at once instead of when the server answers.
_in_use: weakref.WeakSet[urllib3.connection.HTTPConnection] = weakref.WeakSet()
_in_use_lock = threading.Lock()
_SHUT_RDWR: Final = 2  # socket.SHUT_RDWR on every platform


class _TrackedHTTPConnection(urllib3.connection.HTTPConnection):
    tinkex_owner = 0

    def request(self, *args: Any, **kwargs: Any) -> None:
        self.tinkex_owner = threading.get_ident()
        with _in_use_lock:
            _in_use.add(self)
        super().request(*args, **kwargs)


class _TrackedHTTPSConnection(urllib3.connection.HTTPSConnection):
    tinkex_owner = 0

    def request(self, *args: Any, **kwargs: Any) -> None:
        self.tinkex_owner = threading.get_ident()
        with _in_use_lock:
            _in_use.add(self)
        super().request(*args, **kwargs)


class _TrackedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _TrackedHTTPConnection


class _TrackedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _TrackedHTTPSConnection


_TRACKED_POOLS: Final = {"http": _TrackedHTTPPool, "https": _TrackedHTTPSPool}


class _TrackingAdapter(requests.adapters.HTTPAdapter):
    """An HTTPAdapter whose connections remember the thread using them (see interrupt)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _TRACKED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = _TRACKED_POOLS
        return manager


def interrupt_threads(idents: frozenset[int] | set[int]) -> int:
    """Shut down the connections last used by the threads ``idents``.

    A thread blocked reading an answer on one of them gets an ``APIConnectionError`` at once.
    Safe at any time: a connection sitting idle in its pool is detected as dropped and replaced
    on its next use. Returns how many connections were shut down.
    """
    with _in_use_lock:
        chosen = [conn for conn in _in_use if conn.tinkex_owner in idents]  # type: ignore[attr-defined]
    count = 0
    for conn in chosen:
        sock = conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(_SHUT_RDWR)
                count += 1
    return count


def _refuse_cookies() -> http.cookiejar.DefaultCookiePolicy:
    # The protocol has no cookies; a server that sets some must not make the jar grow.
    return http.cookiejar.DefaultCookiePolicy(allowed_domains=[])


class RequestsBackend:
    """Pooled keep-alive HTTP(S) through a ``requests.Session``; thread-safe.

    Args:
        config: the tenant's settings (pool size and blocking, TLS, proxy, size bound).
        adapter: an adapter to mount instead of the default ``HTTPAdapter`` (a custom SSL
            context, an adapter from another package); it must not retry (the transport
            does).
    """

    def __init__(
        self, config: Config, *, adapter: requests.adapters.HTTPAdapter | None = None
    ) -> None:
        self._config = config
        self._custom_adapter = adapter
        self._verify: bool | str = config.ca_bundle or config.verify_tls
        self._proxies = _ProxyChoice(config)
        self._limit = config.max_response_bytes
        self._secrets: tuple[str, ...] = (
            tuple(s for s in (config.api_key, config.cf_access_client_secret) if s)
            + self._proxies.secrets
        )
        self._session = self._new_session()
        _live.add(self)
        _install_fork_hook()

    def _new_session(self) -> requests.Session:
        config = self._config
        session = requests.Session()
        session.trust_env = False
        session.cookies.set_policy(_refuse_cookies())
        adapter = self._custom_adapter or _TrackingAdapter(
            pool_connections=_HOST_POOLS,
            pool_maxsize=config.http_pool_size,
            pool_block=config.http_pool_block,
            max_retries=0,
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def _forget_connections(self) -> None:
        # In a forked child: the inherited sockets belong to the parent. Drop them unclosed
        # (closing would only affect this process, but a TLS close could write to them).
        self._session = self._new_session()

    # ------------------------------------------------------------------ errors
    def _error(self, exc: BaseException, url: str) -> APIConnectionError:
        """Translate a network-level exception; the message never holds a secret."""
        target = redact_url(url)
        query = urllib.parse.urlsplit(url).query
        cause = _root_cause(exc)
        detail = scrub(f"{type(cause).__name__}: {cause}", (*self._secrets, query))
        detail = detail[:_MESSAGE_LIMIT]
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return APITimeoutError(f"timed out connecting to {target}: {detail}")
        if _is_timeout(exc):
            return APITimeoutError(f"timed out talking to {target}: {detail}")
        if isinstance(exc, requests.exceptions.SSLError):
            return APIConnectionError(f"TLS failure talking to {target}: {detail}")
        if isinstance(exc, requests.exceptions.ProxyError):
            return APIConnectionError(f"proxy failure reaching {target}: {detail}")
        if isinstance(cause, urllib3.exceptions.NewConnectionError):
            return APIConnectionError(f"could not connect to {target}: {detail}")
        return APIConnectionError(f"connection to {target} failed: {detail}")

    # ------------------------------------------------------------------ sending
    def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeouts: Timeouts,
    ) -> requests.Response:
        prepared = requests.PreparedRequest()
        prepared.method = method
        prepared.url = url
        sent = dict(headers)
        if body is not None:
            sent["Content-Length"] = str(len(body))
        prepared.headers = sent  # type: ignore[assignment]
        prepared.body = body
        # The session's jar refuses every cookie, so this adds no header; requests needs it
        # set to read a redirect answer.
        prepared.prepare_cookies(self._session.cookies)
        parts = urllib.parse.urlsplit(url)
        try:
            return self._session.send(
                prepared,
                stream=True,
                timeout=timeouts,
                verify=self._verify,
                proxies=self._proxies.for_origin(parts.scheme, parts.netloc),
                allow_redirects=False,
            )
        except NETWORK_ERRORS as exc:
            raise self._error(exc, url) from exc

    def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeouts: Timeouts,
    ) -> RawResponse:
        """Send one request and read the whole answer (see ``Backend.send``).

        Raises:
            ResponseTooLargeError: the answer is bigger than ``Config.max_response_bytes``.
        """
        response = self._send(method, url, headers, body, timeouts)
        try:
            content = self._read_bounded(response, method, url)
        finally:
            response.close()
        return RawResponse(response.status_code, response.headers, content)

    def _read_bounded(self, response: requests.Response, method: str, url: str) -> bytes:
        limit = self._limit
        path = urllib.parse.urlsplit(url).path
        announced = response.headers.get("content-length")
        if announced is not None and announced.strip().isdigit() and int(announced) > limit:
            raise ResponseTooLargeError(
                f"{method} {path}: the answer announces {int(announced)} bytes, more than "
                f"max_response_bytes ({limit})",
                limit=limit,
                size=int(announced),
                method=method,
                path=path,
            )
        pieces: list[bytes] = []
        total = 0
        try:
            for piece in response.iter_content(_READ_CHUNK):
                total += len(piece)
                if total > limit:
                    raise ResponseTooLargeError(
                        f"{method} {path}: the answer grew past max_response_bytes ({limit})",
                        limit=limit,
                        method=method,
                        path=path,
                    )
                pieces.append(piece)
        except _READ_ERRORS as exc:
            raise self._error(exc, url) from exc
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def open(
        self, method: str, url: str, headers: Mapping[str, str], timeouts: Timeouts
    ) -> _Stream:
        """Send one bodiless request; the body is read later (see ``Backend.open``)."""
        return _Stream(self._send(method, url, headers, None, timeouts), url, self)

    def interrupt(self, threads: frozenset[int] | set[int]) -> None:
        """Cut the exchanges the threads ``threads`` are blocked in (see ``interrupt_threads``)."""
        interrupt_threads(threads)

    def close(self) -> None:
        """Close every pooled connection."""
        _live.discard(self)
        self._session.close()


def _root_cause(exc: BaseException) -> BaseException:
    # requests wraps urllib3's MaxRetryError (retries are off, so its "max retries exceeded"
    # text misleads), which wraps the failure itself: report that one.
    inner = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else exc
    reason = getattr(inner, "reason", None)
    return reason if isinstance(reason, BaseException) else inner


def _is_timeout(exc: BaseException) -> bool:
    # requests reports a read timeout met while streaming the body as a ConnectionError
    # wrapping urllib3's ReadTimeoutError.
    timeouts = (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)
    inner = exc.args[0] if exc.args else None
    return isinstance(exc, timeouts) or isinstance(inner, timeouts)


class _Stream:
    """An answer read lazily (see :class:`~tinkex_actors.transport.RawStream`)."""

    __slots__ = ("_backend", "_response", "_url", "headers", "status")

    def __init__(self, response: requests.Response, url: str, backend: RequestsBackend) -> None:
        self._response = response
        self._url = url
        self._backend = backend
        self.status = response.status_code
        self.headers: Mapping[str, str] = response.headers

    def chunks(self, size: int) -> Iterator[bytes]:
        try:
            yield from self._response.iter_content(size)
        except _READ_ERRORS as exc:
            raise self._backend._error(exc, self._url) from exc

    def close(self) -> None:
        # An unread body would poison the connection: requests closes it in that case.
        self._response.close()
