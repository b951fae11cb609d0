"""``HTTPTransport``: one tenant's pooled HTTP client with the protocol's retry rules.

Thread-safety: one transport serves every thread of its tenant. Its state is immutable after
construction (headers, URLs, policy are precomputed) except the credential, which its
:class:`~tinkex_actors.transport._auth.Auth` hands out per request without a lock; each call
works on its own copies; the backend's pools are thread-safe. :meth:`HTTPTransport.close` may
be called from any thread; calls started before it finish, later ones raise
``ClientClosedError``.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, Final

from tinkex_actors import _constants as c
from tinkex_actors import telemetry
from tinkex_actors._logging import LOGGER_NAME, get_logger
from tinkex_actors._redact import scrub
from tinkex_actors.config import Config
from tinkex_actors.errors import (
    BODY_EXCERPT_LIMIT,
    APIError,
    APIStatusError,
    ClientClosedError,
    ValidationError,
    excerpt,
    status_error_class,
)
from tinkex_actors.transport._auth import Auth
from tinkex_actors.transport._backend import RequestsBackend
from tinkex_actors.transport._checks import (
    check_body,
    check_headers,
    check_iteration,
    check_media,
    check_path,
    check_retries,
    check_timeout,
    check_token,
    encode_query,
)
from tinkex_actors.transport._headers import (
    METHODS,
    merge_header,
    new_idempotency_key,
    origin,
    tenant_headers,
)
from tinkex_actors.transport._retry import RetryPolicy, call_with_retries
from tinkex_actors.transport._stream import REDIRECTS, open_stream
from tinkex_actors.transport._types import (
    Backend,
    RawResponse,
    Response,
    StreamResponse,
    Timeouts,
)

__all__ = ["HTTPTransport", "QueryValue"]

QueryValue = str | int | float | bool | None
_HTTP_EVENTS: Final = frozenset(
    {
        telemetry.HTTP_REQUEST_START,
        telemetry.HTTP_REQUEST_STOP,
        telemetry.HTTP_REQUEST_EXCEPTION,
        telemetry.HTTP_REQUEST_RETRY,
    }
)
_TRANSPORT_LOGGER: Final = f"{LOGGER_NAME}.transport"
_NOT_REPLAYED: Final = [False]
# Tenants already warned that TLS verification is off (warned once per process).
_warned_insecure: set[str] = set()
# Server deprecation notes already logged.
_deprecations_seen: set[str] = set()


def _report_deprecation(note: str, level: str | None, path: str) -> None:
    # Once per distinct note per process: servers repeat it on every answer.
    note = note[:500]
    if note in _deprecations_seen:
        return
    _deprecations_seen.add(note)
    log = get_logger("transport")
    report = log.error if (level or "").strip().lower() == "error" else log.warning
    report("tinkex.http.deprecation", note=note, path=path)


def _format_seconds(value: float) -> str:
    return f"{value:g}"


class HTTPTransport:
    """One tenant's HTTP client: pooled keep-alive connections, headers, retries, errors.

    Prefer :func:`~tinkex_actors.transport.acquire_transport` (one shared transport per
    Config) over constructing one per client.

    Args:
        config: the tenant.
        backend: the low-level sender; default :class:`RequestsBackend` for ``config``.
        sleep: called with each retry delay (tests pass a recorder instead of sleeping).
        uniform: returns the jitter draw in [0, 1) (tests pass a constant).
        wall_clock: POSIX time, used to read ``retry-after`` HTTP dates.
        policy: the retry rules (default: the protocol's).

    Thread-safety: see the module docstring; share one transport between threads.
    """

    def __init__(
        self,
        config: Config,
        *,
        backend: Backend | None = None,
        sleep: Callable[[float], None] = time.sleep,
        uniform: Callable[[], float] = random.random,
        wall_clock: Callable[[], float] = time.time,
        policy: RetryPolicy | None = None,
    ) -> None:
        self._config = config
        self._backend: Backend = backend if backend is not None else RequestsBackend(config)
        self._sleep = sleep
        self._uniform = uniform
        self._wall_clock = wall_clock
        self._policy = policy or RetryPolicy()
        self._closed = False
        self._base_url = config.base_url
        self._origin = origin(config.base_url)
        self._headers = tenant_headers(config)
        self._auth = Auth(config)
        self._timeouts = Timeouts(config.connect_timeout, config.timeout)
        self._read_timeout_text = _format_seconds(config.timeout)
        self._tenant_id = config.tenant_id
        self._secrets = tuple(
            s for s in (config.api_key, config.cf_access_client_secret, config.proxy) if s
        )
        self._debug = logging.getLogger(_TRANSPORT_LOGGER)
        if not config.verify_tls and config.tenant_id not in _warned_insecure:
            _warned_insecure.add(config.tenant_id)
            get_logger("transport").warning(
                "tinkex.http.tls_verification_disabled",
                base_url=config.base_url,
                tenant_id=config.tenant_id,
                hint="Config(verify_tls=False): server certificates are not checked",
            )

    # ------------------------------------------------------------------ properties
    @property
    def config(self) -> Config:
        """The tenant's configuration."""
        return self._config

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @property
    def auth(self) -> Auth:
        """Where the credential of each request comes from (static key, command or JWT)."""
        return self._auth

    def origin_headers(self) -> dict[str, str]:
        """A copy of the headers for the base URL's origin, with the current credential."""
        sent = self._headers.copy()
        auth = self._auth
        if auth.dynamic:
            sent[c.HEADER_API_KEY] = auth.token()
        return sent

    def url(self, path: str, query: Mapping[str, QueryValue] | None = None) -> str:
        """The absolute URL of ``path`` (appended to the base URL's path prefix)."""
        url = self._base_url + check_path(path)
        if query:
            encoded = encode_query(query)
            if encoded:
                url = f"{url}?{encoded}"
        return url

    # ------------------------------------------------------------------ request
    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        content_type: str = c.CONTENT_JSON,
        accept: str = c.CONTENT_JSON,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, QueryValue] | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        idempotency_key: str | None = None,
        request_type: str | None = None,
        iteration: int | None = None,
        follow_redirects: bool = True,
        policy: RetryPolicy | None = None,
        deadline: float | None = None,
        sleep: Callable[[float], object] | None = None,
        credential: str | None = None,
    ) -> Response:
        """Send one call to the tenant's server, retrying per protocol §5.1, and return a 2xx.

        Args:
            method: ``GET``, ``POST``, ``PUT``, ``PATCH``, ``DELETE``, ``HEAD`` or ``OPTIONS``.
            path: the endpoint path, e.g. ``"/api/v1/forward_backward"`` (appended to the base
                URL's path prefix).
            body: the encoded body (sent as is, never copied).
            content_type: ``Content-Type`` of ``body``.
            accept: ``Accept`` header.
            headers: extra headers for this call (may not set ``X-API-Key``, ``Host``,
                ``Content-Length`` or ``Transfer-Encoding``).
            query: query parameters (None values are left out; bools become true/false).
            timeout: read timeout for this call (default ``Config.timeout``); also sent as
                ``x-stainless-read-timeout``.
            max_retries: transport retries for this call (default ``Config.max_retries``;
                0 for calls the protocol never retries).
            idempotency_key: ``X-Idempotency-Key`` for a non-GET call (default: a fresh key);
                every retry of this call reuses it.
            request_type: ``X-Tinker-Request-Type`` (retrieve_future).
            iteration: ``X-Tinker-Request-Iteration`` (retrieve_future poll count).
            follow_redirects: follow same-origin redirects (a redirect to another origin is
                never followed: it would carry the API key there). When False, a 3xx answer is
                returned as a Response.
            policy: what to retry and how long to wait (default: the transport's policy).
            deadline: a ``time.monotonic()`` time after which no retry is started.
            sleep: waits out each retry delay instead of the transport's sleep; returning
                True stops retrying (the caller's client closed).
            credential: send this as ``X-API-Key`` instead of the tenant's credential (the
                JWT exchange sends the raw key); such a call is never replayed after a 401.

        Returns:
            The answer (2xx, or 3xx when ``follow_redirects`` is False).

        Raises:
            ValidationError: a bad argument; nothing was sent.
            ClientClosedError: the transport was closed.
            APIStatusError: a non-2xx answer (its subclass by status), after retries.
            APITimeoutError: the last attempt timed out.
            APIConnectionError: the last attempt could not connect or was cut off.
            AuthenticationError: 401, after the one replay a rejected JWT (or credential
                command output) earns.
            ConfigError: the credential command had to run and failed.
        """
        if self._closed:
            raise ClientClosedError("the HTTP transport of this client was closed")
        if method not in METHODS:
            raise ValidationError(
                f"must be one of {sorted(METHODS)}, got {method!r}", field="method"
            )
        url = self.url(path, query)
        body = check_body(body)
        timeouts = self._timeouts
        read_text = self._read_timeout_text
        if timeout is not None:
            timeouts = Timeouts(timeouts.connect, check_timeout(timeout))
            read_text = _format_seconds(timeouts.read)
        retries = self._config.max_retries if max_retries is None else check_retries(max_retries)
        if content_type is not c.CONTENT_JSON:
            check_media(content_type, "content_type")
        if accept is not c.CONTENT_JSON:
            check_media(accept, "accept")

        sent = self._headers.copy()
        if body is not None or method in ("POST", "PUT", "PATCH"):
            sent["Content-Type"] = content_type
        sent["Accept"] = accept
        sent[c.HEADER_READ_TIMEOUT] = read_text
        if method != "GET" and method != "HEAD":
            sent[c.HEADER_IDEMPOTENCY_KEY] = (
                new_idempotency_key()
                if idempotency_key is None
                else check_token(idempotency_key, "idempotency_key")
            )
        if request_type is not None:
            sent[c.HEADER_REQUEST_TYPE] = check_token(request_type, "request_type", limit=64)
        if iteration is not None:
            sent[c.HEADER_REQUEST_ITERATION] = str(check_iteration(iteration))
        if headers:
            for name, value in check_headers(headers).items():
                merge_header(sent, name, value)

        # The static key is in the constant headers: only a changing credential is asked for.
        auth: Auth | None = None
        if credential is not None:
            sent[c.HEADER_API_KEY] = credential
        elif self._auth.dynamic:
            auth = self._auth

        meta = self._start(method, path, request_type, iteration)
        start = time.monotonic_ns()
        key = sent.get(c.HEADER_IDEMPOTENCY_KEY)  # names the call in retry logs
        taken = [0]  # retries taken so far (for the give-up report)
        # A refused credential earns one replay per call (never mutated without an auth).
        replayed = _NOT_REPLAYED if auth is None else [False]

        def attempt(number: int) -> Response:
            taken[0] = number
            sent[c.HEADER_RETRY_COUNT] = str(number)
            if auth is not None:
                sent[c.HEADER_API_KEY] = auth.token()  # renewed meanwhile, maybe
            return self._attempt(
                method,
                url,
                path,
                sent,
                body,
                timeouts,
                follow_redirects,
                meta,
                start,
                number,
                auth,
                replayed,
            )

        def on_retry(number: int, error: APIError, delay: float) -> None:
            self._before_retry(number, error, delay, meta, method, path, key)

        try:
            return call_with_retries(
                attempt,
                policy=policy or self._policy,
                max_retries=retries,
                sleep=sleep or self._sleep,
                deadline=deadline,
                on_retry=on_retry,
                uniform=self._uniform,
                wall_clock=self._wall_clock,
            )
        except APIError as exc:
            exc.method, exc.path = method, path
            self._give_up(exc, taken[0], start, meta, retries, key)
            raise

    def _start(
        self, method: str, path: str, request_type: str | None, iteration: int | None
    ) -> dict[str, Any] | None:
        # Build event metadata only when someone listens.
        if not telemetry.any_enabled(_HTTP_EVENTS):
            return None
        meta: dict[str, Any] = {
            "method": method,
            "path": path,
            "tenant_id": self._tenant_id,
            "request_type": request_type,
            "iteration": iteration,
            "span_id": telemetry.new_span_id(),
        }
        telemetry.execute(
            telemetry.HTTP_REQUEST_START,
            {"monotonic_time": time.monotonic_ns(), "system_time": time.time_ns()},
            meta,
        )
        return meta

    def _attempt(
        self,
        method: str,
        url: str,
        path: str,
        sent: dict[str, str],
        body: bytes | None,
        timeouts: Timeouts,
        follow_redirects: bool,
        meta: dict[str, Any] | None,
        start: int,
        number: int,
        auth: Auth | None,
        replayed: list[bool],
    ) -> Response:
        # One attempt: send, follow same-origin redirects, return a 2xx (or an unfollowed
        # 3xx) or raise the answer as its typed status error.
        redirects = 0
        send = self._backend.send
        while True:
            raw = send(method, url, sent, body, timeouts)
            status = raw.status
            if 200 <= status < 300 or (300 <= status < 400 and not follow_redirects):
                return self._done(raw, method, path, number, start, meta)
            if status not in REDIRECTS:
                if auth is not None and not replayed[0] and auth.should_renew(status, raw.headers):
                    # The credential itself was refused: once more with a fresh one.
                    replayed[0] = True
                    sent[c.HEADER_API_KEY] = auth.renew(sent[c.HEADER_API_KEY])
                    self._log_replay(method, path)
                    continue
                why = (
                    "refused again after one replay with a fresh credential"
                    if (status == 401 and replayed[0])
                    else None
                )
                raise self._status_error(raw, method, path, why)
            if redirects >= c.HTTP_MAX_REDIRECTS:
                raise self._status_error(raw, method, path, "too many redirects", final=True)
            target = self._same_origin_location(raw, url)
            if target is None:
                raise self._status_error(
                    raw,
                    method,
                    path,
                    "redirect to another origin not followed (the API key is sent only "
                    "to the base URL's origin)",
                    final=True,
                )
            redirects += 1
            url = target
            if status == 303 or (status in (301, 302) and method == "POST"):
                method, body = ("HEAD" if method == "HEAD" else "GET"), None
                sent.pop("Content-Type", None)
                sent.pop(c.HEADER_IDEMPOTENCY_KEY, None)

    def _log_replay(self, method: str, path: str) -> None:
        get_logger("transport").info(
            "tinkex.http.credential_replay",
            method=method,
            path=path,
            mode=self._auth.mode,
            tenant_id=self._tenant_id,
        )

    def _same_origin_location(self, raw: RawResponse, url: str) -> str | None:
        location = raw.headers.get("location")
        if not location:
            return None
        target = urllib.parse.urljoin(url, location)
        try:
            same = origin(target) == self._origin
        except ValueError:
            return None
        return target if same else None

    def _done(
        self,
        raw: RawResponse,
        method: str,
        path: str,
        attempt: int,
        start: int,
        meta: dict[str, Any] | None,
    ) -> Response:
        end = time.monotonic_ns()
        if meta is not None:
            telemetry.execute(
                telemetry.HTTP_REQUEST_STOP,
                {"duration": end - start, "monotonic_time": end},
                {**meta, "status": raw.status, "retry_count": attempt},
            )
        if self._debug.isEnabledFor(logging.DEBUG):
            get_logger("transport").debug(
                "tinkex.http.request",
                method=method,
                path=path,
                status=raw.status,
                retries=attempt,
                duration_ms=round((end - start) / 1e6, 3),
                tenant_id=self._tenant_id,
            )
        note = raw.headers.get(c.HEADER_DEPRECATION_NOTE)
        if note is not None:
            _report_deprecation(note, raw.headers.get(c.HEADER_DEPRECATION_LEVEL), path)
        return Response(
            raw.status, raw.headers, raw.body, (end - start) / 1e9, attempt, method, path
        )

    def _status_error(
        self, raw: RawResponse, method: str, path: str, why: str | None, *, final: bool = False
    ) -> APIStatusError:
        cls = status_error_class(raw.status)
        # A server (or a proxy) echoing our credentials must not put them into the error.
        secrets = self._secrets + self._auth.secrets()
        shown = scrub(excerpt(raw.body), secrets)
        headers = {k.lower(): scrub(v, secrets) for k, v in raw.headers.items()}
        if final:
            # Our own verdict (a redirect we will not follow): asking again cannot help.
            headers[c.HEADER_SHOULD_RETRY] = "false"
        message = f"{method} {path} -> HTTP {raw.status}"
        if why:
            message += f": {why}"
        if shown:
            message += f": {shown}"
        return cls(
            message,
            status_code=raw.status,
            body=shown,
            headers=headers,
            method=method,
            path=path,
        )

    def _before_retry(
        self,
        attempt: int,
        error: APIError,
        delay: float,
        meta: dict[str, Any] | None,
        method: str,
        path: str,
        request_key: str | None = None,
    ) -> None:
        status = error.status_code if isinstance(error, APIStatusError) else None
        reason = f"HTTP {status}" if status is not None else type(error).__name__
        get_logger("transport").warning(
            "tinkex.http.retry_scheduled",
            method=method,
            path=path,
            attempt=attempt + 1,
            delay_s=round(delay, 3),
            reason=reason,
            tenant_id=self._tenant_id,
            idempotency_key=request_key,
        )
        if meta is not None:
            telemetry.execute(
                telemetry.HTTP_REQUEST_RETRY,
                {"delay": int(delay * 1e9), "monotonic_time": time.monotonic_ns()},
                {**meta, "attempt": attempt + 1, "status": status, "reason": reason},
            )

    def _give_up(
        self,
        exc: APIError,
        attempt: int,
        start: int,
        meta: dict[str, Any] | None,
        retries: int,
        request_key: str | None = None,
    ) -> None:
        status = exc.status_code if isinstance(exc, APIStatusError) else None
        if meta is not None:
            end = time.monotonic_ns()
            telemetry.execute(
                telemetry.HTTP_REQUEST_EXCEPTION,
                {"duration": end - start, "monotonic_time": end},
                {
                    **meta,
                    "status": status,
                    "retry_count": attempt,
                    "kind": type(exc).__qualname__,
                    "reason": str(exc)[:BODY_EXCERPT_LIMIT],
                },
            )
        if attempt > 0 and attempt >= retries:
            get_logger("transport").error(
                "tinkex.http.retries_exhausted",
                retries=attempt,
                status=status,
                kind=type(exc).__qualname__,
                tenant_id=self._tenant_id,
                path=exc.path,
                idempotency_key=request_key,
            )

    # ------------------------------------------------------------------ stream
    def stream(
        self,
        url: str,
        *,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        accept: str = "*/*",
        timeout: float | None = None,
        max_retries: int | None = None,
        chunk_size: int = c.HTTP_STREAM_CHUNK_SIZE,
    ) -> contextlib.AbstractContextManager[StreamResponse]:
        """Open a download and yield its body lazily (a context manager).

        ``url`` is a path on the tenant's server (``"/api/v1/..."``) or an absolute URL
        (a signed URL). The API key, Cloudflare Access and default headers are sent **only**
        when the URL's origin (scheme, host, port) is the base URL's; other origins get just
        ``User-Agent`` and ``Accept``. Redirects are followed (up to a bound) with the same
        rule at every hop. Connection errors and retryable statuses are retried before the
        body starts; once it streams, failures raise to the caller.

        Example::

            with transport.stream(signed_url) as download:
                total = download.content_length
                for chunk in download:
                    out.write(chunk)

        Raises:
            ValidationError: ``url`` is neither a path nor an absolute http(s) URL.
            APIStatusError: a non-2xx answer (body excerpt included).
            APIConnectionError / APITimeoutError: the network failed.
        """
        return open_stream(
            self,
            url,
            method=method,
            headers=headers,
            accept=accept,
            timeout=timeout,
            max_retries=max_retries,
            chunk_size=chunk_size,
        )

    # ------------------------------------------------------------------ lifecycle
    def interrupt(self, threads: set[int] | frozenset[int]) -> None:
        """Cut short the exchanges the threads ``threads`` are blocked in (a long poll of a
        closing client): they fail at once with ``APIConnectionError``. Never raises."""
        if threads:
            interrupt = getattr(self._backend, "interrupt", None)
            if interrupt is not None:
                interrupt(threads)

    def close(self) -> None:
        """Close the pooled connections. Idempotent; later calls raise ``ClientClosedError``."""
        if self._closed:
            return
        self._closed = True
        self._backend.close()

    def __enter__(self) -> HTTPTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"HTTPTransport(base_url={self._base_url!r}, tenant_id={self._tenant_id!r}, {state})"
