"""HTTP transport on ``requests``: one pooled Session per tenant, protocol headers, retries.

Obtain a tenant's transport from the process-wide registry and give it back when done::

    from tinkex_actors.transport import acquire_transport, release_transport

    transport = acquire_transport(config)       # shared by every client of this Config
    try:
        reply = transport.request("POST", "/api/v1/create_session", body=payload)
        data = reply.json()
    finally:
        release_transport(transport)            # the last holder closes the pool

See ``docs/configuration.md`` (options) and ``docs/telemetry.md`` (events). The backend, the
low-level sender, is :class:`RequestsBackend` (a ``requests.Session`` per tenant); tests may
inject a scripted fake from :mod:`tinkex_actors.testing`. Every retrying caller uses
:class:`RetryPolicy` through :func:`call_with_retries`.
"""

from __future__ import annotations

from tinkex_actors.transport._backend import RequestsBackend
from tinkex_actors.transport._checks import path_segment
from tinkex_actors.transport._headers import USER_AGENT
from tinkex_actors.transport._http import HTTPTransport, QueryValue
from tinkex_actors.transport._registry import (
    TransportRegistry,
    acquire_transport,
    release_transport,
    shared_transports,
)
from tinkex_actors.transport._retry import POLL_POLICY, RetryPolicy, call_with_retries
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
    "POLL_POLICY",
    "QueryValue",
    "RawResponse",
    "RawStream",
    "RequestsBackend",
    "Response",
    "RetryPolicy",
    "StreamResponse",
    "Timeouts",
    "TransportRegistry",
    "USER_AGENT",
    "acquire_transport",
    "call_with_retries",
    "path_segment",
    "release_transport",
    "shared_transports",
]
