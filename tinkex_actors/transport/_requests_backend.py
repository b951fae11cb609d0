"""An alternative backend on the ``requests`` stack: a mounted ``HTTPAdapter``, prepared requests.

Use it when an application needs a ``requests`` adapter of its own (a custom SSL context, a
transport adapter from another package)::

    transport = HTTPTransport(config, backend=RequestsBackend(config, adapter=my_adapter))

Thread-safety: requests are sent with ``HTTPAdapter.send`` (urllib3's thread-safe pools);
no ``Session`` (not documented thread-safe, and it would merge environment settings and
cookies per call) is involved. It costs more CPU per exchange than
:class:`~tinkex_actors.transport.Urllib3Backend` (see ``bench/bench_transport.py``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import requests
import requests.adapters
import requests.exceptions

from tinkex_actors._redact import redact_url, scrub
from tinkex_actors.config import Config
from tinkex_actors.errors import APIConnectionError, APITimeoutError
from tinkex_actors.transport._backend import NETWORK_ERRORS, network_error
from tinkex_actors.transport._types import RawResponse, Timeouts

__all__ = ["RequestsBackend"]

_MESSAGE_LIMIT = 300
_ERRORS: tuple[type[BaseException], ...] = (requests.exceptions.RequestException, *NETWORK_ERRORS)


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


class RequestsBackend:
    """Sends through a ``requests`` ``HTTPAdapter`` (thread-safe; see the module docstring).

    Args:
        config: the tenant's settings (TLS verification, CA bundle, proxy, pool size).
        adapter: an adapter to use instead of a default ``HTTPAdapter``; it must not retry
            (the transport does).
    """

    def __init__(
        self, config: Config, *, adapter: requests.adapters.HTTPAdapter | None = None
    ) -> None:
        self._adapter = adapter or requests.adapters.HTTPAdapter(
            pool_connections=4, pool_maxsize=config.http_pool_size, max_retries=0
        )
        self._verify: bool | str = config.ca_bundle or config.verify_tls
        self._proxies = {"http": config.proxy, "https": config.proxy} if config.proxy else {}
        self._secrets: tuple[str, ...] = tuple(
            s for s in (config.api_key, config.cf_access_client_secret, config.proxy) if s
        )

    def _error(self, exc: BaseException, url: str) -> APIConnectionError:
        if not isinstance(exc, requests.exceptions.RequestException):
            return network_error(exc, url, self._secrets)
        detail = scrub(f"{type(exc).__name__}: {exc}", self._secrets)
        query = url.partition("?")[2]
        detail = scrub(detail, (query,))[:_MESSAGE_LIMIT]
        target = redact_url(url)
        if isinstance(exc, requests.exceptions.Timeout):
            return APITimeoutError(f"timed out talking to {target}: {detail}")
        return APIConnectionError(f"connection to {target} failed: {detail}")

    def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeouts: Timeouts,
        stream: bool,
    ) -> requests.Response:
        prepared = requests.PreparedRequest()
        prepared.method = method
        prepared.url = url
        # A plain dict: HTTPAdapter only reads it; Content-Length keeps it from chunking.
        sent = dict(headers)
        if body is not None:
            sent["Content-Length"] = str(len(body))
        prepared.headers = sent  # type: ignore[assignment]
        prepared.body = body
        try:
            return self._adapter.send(
                prepared,
                stream=stream,
                timeout=(timeouts.connect, timeouts.read),
                verify=self._verify,
                proxies=self._proxies,
            )
        except _ERRORS as exc:
            raise self._error(exc, url) from exc

    def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeouts: Timeouts,
    ) -> RawResponse:
        """Send one request and read the whole answer (see ``Backend.send``)."""
        response = self._send(method, url, headers, body, timeouts, stream=False)
        try:
            content = response.content
        except _ERRORS as exc:
            raise self._error(exc, url) from exc
        return RawResponse(response.status_code, _lower(response.headers), content)

    def open(
        self, method: str, url: str, headers: Mapping[str, str], timeouts: Timeouts
    ) -> _RequestsStream:
        """Send one bodiless request; the body is read later (see ``Backend.open``)."""
        response = self._send(method, url, headers, None, timeouts, stream=True)
        return _RequestsStream(response, url, self)

    def close(self) -> None:
        """Close every pooled connection."""
        self._adapter.close()


class _RequestsStream:
    __slots__ = ("_backend", "_response", "_url", "headers", "status")

    def __init__(self, response: requests.Response, url: str, backend: RequestsBackend) -> None:
        self._response = response
        self._url = url
        self._backend = backend
        self.status = response.status_code
        self.headers = _lower(response.headers)

    def chunks(self, size: int) -> Iterator[bytes]:
        try:
            yield from self._response.iter_content(size)
        except _ERRORS as exc:
            raise self._backend._error(exc, self._url) from exc

    def close(self) -> None:
        self._response.close()
