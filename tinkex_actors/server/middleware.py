"""Pure-ASGI guard in front of every route: credential check and body size limit.

Requests without an accepted ``X-API-Key`` get 401, except the health check and the signed
archive downloads (which carry their own signature). With ``--jwt-auth`` the header may also
carry a JWT the server issued (see ``tokens.py``); a JWT that is expired, altered or otherwise
rejected gets 401 with ``WWW-Authenticate: Bearer error="invalid_token"`` (the official SDK
then exchanges its key for a new token and replays the request once). Bodies larger than the
limit get 413, by ``Content-Length`` before anything is read, or while a chunked body streams
in. The route sees ``scope["state"]["tenant"]`` and ``["credential"]`` (``"key"``, ``"jwt"``
or None).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from tinkex_actors._constants import HEADER_API_KEY
from tinkex_actors.server.auth import KeyRing
from tinkex_actors.server.http_errors import too_large
from tinkex_actors.server.tokens import JWT_PREFIX, TokenIssuer

__all__ = ["CREDENTIAL_JWT", "CREDENTIAL_KEY", "GuardMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_KEY_HEADER = HEADER_API_KEY.lower().encode()
CREDENTIAL_KEY = "key"
CREDENTIAL_JWT = "jwt"
_CHALLENGE_KEY = b'APIKey header="X-API-Key"'
#: RFC 6750 §3.1; the official SDK looks for the ``error="invalid_token"`` part.
_CHALLENGE_BAD_TOKEN = b'Bearer error="invalid_token"'


async def _reply(send: Send, status: int, detail: str, challenge: bytes = _CHALLENGE_KEY) -> None:
    body = orjson.dumps({"detail": detail})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", challenge))
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
        tokens: the JWT issuer when ``--jwt-auth`` is on (JWTs are refused otherwise).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        keyring: KeyRing,
        open_paths: frozenset[str],
        open_prefixes: tuple[str, ...],
        max_body_bytes: int,
        tokens: TokenIssuer | None = None,
    ) -> None:
        self.app = app
        self.tokens = tokens
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
        credential: str | None = None
        problem = ""
        if self.tokens is not None and presented and presented.startswith(JWT_PREFIX):
            tenant, problem = self.tokens.verify(presented)
            credential = CREDENTIAL_JWT
        else:
            tenant = self.keyring.tenant(presented)
            credential = CREDENTIAL_KEY
        if tenant is None:
            credential = None
            if path not in self.open_paths and not path.startswith(self.open_prefixes):
                if problem:
                    await _reply(send, 401, problem, _CHALLENGE_BAD_TOKEN)
                else:
                    detail = f"missing or invalid API key (send it as {HEADER_API_KEY})"
                    await _reply(send, 401, detail)
                return
        state = scope.setdefault("state", {})
        state["tenant"] = tenant
        state["credential"] = credential
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
