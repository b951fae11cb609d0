"""Pure-ASGI guard in front of every route: API key check and body size limit.

Requests without an accepted ``X-API-Key`` get 401, except the health check and the signed
archive downloads (which carry their own signature). Bodies larger than the limit get 413,
by ``Content-Length`` before anything is read, or while a chunked body streams in.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from tinkex_actors._constants import HEADER_API_KEY
from tinkex_actors.server.auth import KeyRing
from tinkex_actors.server.http_errors import too_large

__all__ = ["GuardMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_KEY_HEADER = HEADER_API_KEY.lower().encode()


async def _reply(send: Send, status: int, detail: str) -> None:
    body = orjson.dumps({"detail": detail})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'APIKey header="X-API-Key"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class GuardMiddleware:
    """Authenticate and bound every HTTP request.

    Args:
        app: the wrapped ASGI app.
        keyring: accepted keys.
        open_paths: exact paths that need no key.
        open_prefixes: path prefixes that need no key.
        max_body_bytes: the request body limit.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        keyring: KeyRing,
        open_paths: frozenset[str],
        open_prefixes: tuple[str, ...],
        max_body_bytes: int,
    ) -> None:
        self.app = app
        self.keyring = keyring
        self.open_paths = open_paths
        self.open_prefixes = open_prefixes
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        presented: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await _reply(send, 400, "invalid Content-Length header")
                    return
                if length > self.max_body_bytes:
                    await _reply(
                        send, 413, f"request body of {length} bytes exceeds {self.max_body_bytes}"
                    )
                    return
            elif name == _KEY_HEADER:
                presented = value
        path: str = scope["path"]
        tenant = self.keyring.tenant(presented)
        if (
            tenant is None
            and path not in self.open_paths
            and not path.startswith(self.open_prefixes)
        ):
            await _reply(send, 401, f"missing or invalid API key (send it as {HEADER_API_KEY})")
            return
        scope.setdefault("state", {})["tenant"] = tenant
        await self.app(scope, self._bounded(receive), send)

    def _bounded(self, receive: Receive) -> Receive:
        seen = 0
        limit = self.max_body_bytes

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise too_large(f"request body exceeds {limit} bytes")
            return message

        return wrapped
