"""Errors the server answers with, as the library's own status-error classes.

The server raises :class:`~tinkex_actors.errors.APIStatusError` subclasses; the app's exception
handler turns each into its status with a JSON ``{"detail": message}`` body (never an empty
body: the official SDK treats an empty 400 as a proxy failure).

Clients retry 409 by default (protocol §5.1: it usually means lock contention). Every 409 this
server sends describes a state that a retry of the same request cannot change (a name taken, a
checkpoint already public, a ``seq_id`` or idempotency key used for another request), so
:func:`conflict` adds ``x-should-retry: false`` unless the caller says the conflict may clear.
"""

from __future__ import annotations

import math

from tinkex_actors._constants import (
    HEADER_RETRY_AFTER,
    HEADER_RETRY_AFTER_MS,
    HEADER_SHOULD_RETRY,
)
from tinkex_actors.errors import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    GoneError,
    InternalServerError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
)

__all__ = [
    "bad_request",
    "conflict",
    "forbidden",
    "gone",
    "not_found",
    "rate_limited",
    "too_large",
    "unauthorized",
    "unavailable",
]


def bad_request(message: str) -> APIStatusError:
    """400: the request is malformed or names something invalid."""
    return BadRequestError(message, status_code=400)


def unauthorized(message: str) -> APIStatusError:
    """401: no valid API key."""
    return AuthenticationError(message, status_code=401)


def forbidden(message: str) -> APIStatusError:
    """403: visible but not yours to change, or a bad archive signature."""
    return PermissionDeniedError(message, status_code=403)


def not_found(message: str) -> APIStatusError:
    """404: unknown, foreign or expired."""
    return NotFoundError(message, status_code=404)


def conflict(message: str, *, may_clear: bool = False) -> APIStatusError:
    """409: the resource's state forbids the request.

    Args:
        message: what conflicts.
        may_clear: the conflict may go away by itself (then clients may retry); by default
            it cannot, and the answer carries ``x-should-retry: false``.
    """
    headers = None if may_clear else {HEADER_SHOULD_RETRY: "false"}
    return ConflictError(message, status_code=409, headers=headers)


def gone(message: str) -> APIStatusError:
    """410: the session was finished."""
    return GoneError(message, status_code=410)


def too_large(message: str) -> APIStatusError:
    """413: the body exceeds the server's limit."""
    return PayloadTooLargeError(message, status_code=413)


def unavailable(message: str, retry_after: float) -> APIStatusError:
    """503 with ``retry-after``: try again shortly."""
    return InternalServerError(
        message, status_code=503, headers={HEADER_RETRY_AFTER: str(max(1, round(retry_after)))}
    )


def rate_limited(message: str, wait: float) -> APIStatusError:
    """429 with ``retry-after`` (whole seconds, at least 1) and ``retry-after-ms``."""
    return RateLimitError(
        message,
        status_code=429,
        headers={
            HEADER_RETRY_AFTER: str(max(1, math.ceil(wait))),
            HEADER_RETRY_AFTER_MS: str(max(1, math.ceil(wait * 1000))),
        },
    )
