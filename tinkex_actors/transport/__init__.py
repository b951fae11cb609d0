"""HTTP transport: pooled keep-alive connections per tenant, protocol headers, retries, errors.

Obtain a tenant's transport from the process-wide registry and give it back when done::

    from tinkex_actors.transport import acquire_transport, release_transport

    transport = acquire_transport(config)       # shared by every client of this Config
    try:
        reply = transport.request("POST", "/api/v1/create_session", body=payload)
        data = reply.json()
    finally:
        release_transport(transport)            # the last holder closes the pool

See ``docs/configuration.md`` (options) and ``docs/telemetry.md`` (events). The backend, the
low-level sender, can be swapped: :class:`SocketBackend` (default: keep-alive HTTP/1.1 on
sockets for the base URL, urllib3 for the rest), :class:`Urllib3Backend`,
:class:`RequestsBackend`, or a fake from :mod:`tinkex_actors.testing`.
"""

from __future__ import annotations

from tinkex_actors.transport._backend import Urllib3Backend
from tinkex_actors.transport._headers import USER_AGENT
from tinkex_actors.transport._http import HTTPTransport, QueryValue
from tinkex_actors.transport._registry import (
    TransportRegistry,
    acquire_transport,
    release_transport,
    shared_transports,
)
from tinkex_actors.transport._requests_backend import RequestsBackend
from tinkex_actors.transport._retry import RetryPolicy
from tinkex_actors.transport._socket_backend import SocketBackend
from tinkex_actors.transport._types import (
    Backend,
    RawResponse,
    RawStream,
    Response,
    StreamResponse,
    Timeouts,
)

__all__ = [
    "Backend",
    "HTTPTransport",
    "QueryValue",
    "RawResponse",
    "RawStream",
    "RequestsBackend",
    "Response",
    "RetryPolicy",
    "SocketBackend",
    "StreamResponse",
    "Timeouts",
    "TransportRegistry",
    "USER_AGENT",
    "Urllib3Backend",
    "acquire_transport",
    "release_transport",
    "shared_transports",
]
