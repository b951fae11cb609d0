"""``retrieve_future`` (protocol §3.7): long-poll a queued request's result.

A pending future is held up to ``--poll-hold-seconds`` (below the client's 45 s timeout),
then answered ``{"type": "try_again", ...}``. Failures are HTTP 200 ``{"error", "category"}``.
Results of forward_backward and asample are protobuf when ``Accept`` asks for
``application/x-protobuf``, otherwise their legacy JSON shapes; everything else is JSON.
Unknown (or foreign, or evicted) request ids are 404; ids issued before the server restarted
are 410 (the result is lost: submit again).

It is the hottest endpoint (every client polls every future), so it is served by a small
pure-ASGI layer in front of FastAPI's router (inside the auth guard), which costs several
times less per answer than a routed endpoint.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from tinkex_actors._constants import API_PREFIX, CONTENT_JSON, CONTENT_PROTOBUF
from tinkex_actors.errors import APIStatusError
from tinkex_actors.server.state import ServerState

__all__ = ["RETRIEVE_FUTURE_PATH", "FuturesEndpoint"]

RETRIEVE_FUTURE_PATH = f"{API_PREFIX}/retrieve_future"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_JSON_TYPE = CONTENT_JSON.encode()
_PROTO_TYPE = CONTENT_PROTOBUF.encode()
_PROTO_ACCEPT = CONTENT_PROTOBUF.encode()


async def _send(send: Send, status: int, body: bytes, content_type: bytes = _JSON_TYPE) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _detail(send: Send, status: int, message: str) -> None:
    await _send(send, status, orjson.dumps({"detail": message}))


class FuturesEndpoint:
    """Serves ``POST /api/v1/retrieve_future``; passes everything else to ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != RETRIEVE_FUTURE_PATH:
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            await _detail(send, 405, "Method Not Allowed")
            return
        chunks = []
        try:
            while True:
                message = await receive()
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    break
        except APIStatusError as exc:  # the guard's body limit
            await _detail(send, exc.status_code, str(exc))
            return
        await self.retrieve(scope, b"".join(chunks), send)

    async def retrieve(self, scope: Scope, raw: bytes, send: Send) -> None:
        """Answer one poll."""
        try:
            request_id = orjson.loads(raw)["request_id"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            await _detail(send, 400, "expected a JSON body with a string request_id")
            return
        if not isinstance(request_id, str):
            await _detail(send, 400, "request_id: expected a string")
            return
        state: ServerState = scope["app"].state.server
        record = state.futures.get(request_id, scope["state"]["tenant"])
        if record is None:
            if state.futures.from_earlier_run(request_id):
                # Its result died with the previous server process: 410 tells the client to
                # submit again (the SDK re-submits samples), where 404 would be a dead end.
                message = (
                    f"future {request_id!r} was issued before this server restarted and its "
                    "result is lost; submit the request again"
                )
                await _detail(send, 410, message)
                return
            message = f"unknown future {request_id!r} (never issued, expired, or not yours)"
            await _detail(send, 404, message)
            return
        if not record.done and not state.shutting_down:
            await record.wait(state.settings.poll_hold_seconds)
        if not record.done:
            body = {"type": "try_again", "request_id": request_id, "queue_state": "active"}
            await _send(send, 200, orjson.dumps(body))
            return
        accept = next((v for k, v in scope["headers"] if k == b"accept"), b"")
        data, binary = record.encoded(_PROTO_ACCEPT in accept)
        await _send(send, 200, data, _PROTO_TYPE if binary else _JSON_TYPE)
        record.delivered()
