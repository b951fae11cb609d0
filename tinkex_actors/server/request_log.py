"""The server's request log: one line per HTTP request, at INFO.

Each line (event ``tinkex.server.request``) carries the method, the path (never the query
string: signed download URLs carry their signature there), the status, the duration in
milliseconds, and when known the client's ``X-Idempotency-Key``, the ``X-Tinker-Request-Type``
of a future poll and the model the request concerned (routes note it with :func:`note_model`).
An error answer (4xx, 5xx) adds its ``detail`` text. Bodies, other headers and API keys are
never logged. 4xx lines are INFO like the rest (a client mistake is not a server problem);
5xx lines are WARNING.

The middleware is the outermost layer, so it also sees the guard's 401 and 413 answers. When
the logger is not enabled for INFO (the server's default ``--log-level WARNING``) it costs one
level check per request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from tinkex_actors._constants import HEADER_IDEMPOTENCY_KEY, HEADER_REQUEST_TYPE
from tinkex_actors._logging import LOGGER_NAME, get_logger
from tinkex_actors.errors import excerpt

__all__ = ["RequestLogMiddleware", "note_model"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The logger's name under the library's logger (``tinkex_actors.server.requests``).
LOG_NAME = "server.requests"
#: The scope-state key under which routes note the model a request concerns.
_MODEL_KEY = "tinkex.model_id"
#: Error bodies are JSON ``{"detail": ...}`` of a few hundred bytes; never keep more.
_ERROR_BODY_LIMIT = 4096
_DETAIL_LIMIT = 500
_HEADERS = {
    HEADER_IDEMPOTENCY_KEY.lower().encode(): "idempotency_key",
    HEADER_REQUEST_TYPE.lower().encode(): "request_type",
}


def note_model(scope: Scope, model_id: str) -> None:
    """Record in the request's scope which model (training run) it concerns, for the log."""
    state = scope.setdefault("state", {})
    state[_MODEL_KEY] = model_id


def _detail(body: bytes) -> str:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return excerpt(body, _DETAIL_LIMIT)
    if isinstance(parsed, dict) and "detail" in parsed:
        detail = parsed["detail"]
        return excerpt(detail if isinstance(detail, str) else orjson.dumps(detail), _DETAIL_LIMIT)
    return excerpt(body, _DETAIL_LIMIT)


class RequestLogMiddleware:
    """Log every HTTP request once its answer is sent (or the app failed).

    Args:
        app: the wrapped ASGI app.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._level_check = logging.getLogger(f"{LOGGER_NAME}.{LOG_NAME}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._level_check.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        error = bytearray()

        async def logged_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and status >= 400:
                room = _ERROR_BODY_LIMIT - len(error)
                if room > 0:
                    error.extend(message.get("body", b"")[:room])
            await send(message)

        try:
            await self.app(scope, receive, logged_send)
        except BaseException:
            status = status or 500
            raise
        finally:
            self._log(scope, status, (time.perf_counter() - started) * 1000.0, bytes(error))

    @staticmethod
    def _log(scope: Scope, status: int, duration_ms: float, error: bytes) -> None:
        fields: dict[str, Any] = {
            "method": scope.get("method", ""),
            "path": scope.get("path", ""),
            "status": status,
            "duration_ms": round(duration_ms, 1),
        }
        for name, value in scope.get("headers", ()):
            label = _HEADERS.get(name)
            if label is not None:
                fields[label] = value.decode("latin-1")[:_DETAIL_LIMIT]
        model_id = scope.get("state", {}).get(_MODEL_KEY)
        if model_id:
            fields["model_id"] = model_id
        if status >= 400:
            fields["error"] = _detail(error) if error else ""
        log = get_logger(LOG_NAME)
        if status >= 500:
            log.warning("tinkex.server.request", **fields)
        else:
            log.info("tinkex.server.request", **fields)
