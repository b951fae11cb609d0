"""``retrieve_future`` and ``retrieve_futures`` (protocol §3.7): long polls for results.

``retrieve_future`` long-polls one queued request's result.

A pending future is held up to ``--poll-hold-seconds`` (below the client's 45 s timeout),
then answered ``{"type": "try_again", ...}``. Failures are HTTP 200 ``{"error", "category"}``.
Results of forward_backward and asample are protobuf when ``Accept`` asks for
``application/x-protobuf``, otherwise their legacy JSON shapes; everything else is JSON.
Unknown (or foreign, or evicted) request ids are 404; ids issued before the server restarted
are 410 (the result is lost: submit again).

``retrieve_futures`` (0.38, announced by ``client/config`` ``sample_use_retrieve_futures``)
long-polls the completion log of one sampling session and clone
(:mod:`tinkex_actors.server.completions`): ``{"completions": [{"state": "finished",
"request_id", "response_payload_uncompressed_size"} | {"state": "failed", "request_id"}],
"cursor"}``, answered as soon as a completion past ``prev_cursor`` exists, else after
``timeout`` seconds (``--poll-hold-seconds`` when absent, and at most that; ``0`` answers at
once: the SDK's acknowledgement-only polls). ``retrieved_request_ids`` drops those futures
(the client has their results). Unknown or foreign sampling sessions are 404; those of a
finished session 410; a ``prev_cursor`` ahead of every cursor this server handed out 400.
The payloads are then fetched with ``retrieve_future`` as before.

Both are served by a small pure-ASGI layer in front of FastAPI's router (inside the auth
guard): ``retrieve_future`` is the hottest endpoint (every client polls every future), and
this costs several times less per answer than a routed endpoint.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from tinkex_actors._constants import API_PREFIX, CONTENT_JSON, CONTENT_PROTOBUF
from tinkex_actors.errors import APIStatusError
from tinkex_actors.server.completions import CompletionLog
from tinkex_actors.server.http_errors import bad_request, gone, not_found
from tinkex_actors.server.pending import PendingRequest
from tinkex_actors.server.routes._common import parse
from tinkex_actors.server.schemas import FuturesTargetBody, RetrieveFuturesBody
from tinkex_actors.server.state import ServerState

__all__ = ["PATHS", "RETRIEVE_FUTURES_PATH", "RETRIEVE_FUTURE_PATH", "ResultsEndpoint"]

RETRIEVE_FUTURE_PATH = f"{API_PREFIX}/retrieve_future"
RETRIEVE_FUTURES_PATH = f"{API_PREFIX}/retrieve_futures"
#: Most completions in one retrieve_futures answer (the rest come with the next poll).
COMPLETIONS_PER_ANSWER = 10_000
#: Every path this layer answers (POST only).
PATHS = frozenset({RETRIEVE_FUTURE_PATH, RETRIEVE_FUTURES_PATH})

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


def _target_log(state: ServerState, tenant: str, target: FuturesTargetBody) -> CompletionLog:
    """The completion log a poll names; 404 unknown or foreign, 410 finished."""
    sampler_id = target.sampling_session_id
    row = state.store.get_sampler(sampler_id)
    if row is None or row.owner != tenant:
        raise not_found(f"target.sampling_session_id: unknown sampling session {sampler_id!r}")
    session = state.store.get_session(row.session_id)
    if session is None or session.status != "active":
        raise gone(f"sampling session {sampler_id!r} belongs to a finished session")
    return state.pending.logs.open((sampler_id, target.cloned_sampler_id), tenant)


def _completion(record: PendingRequest) -> dict[str, Any]:
    if record.failed:
        return {"state": "failed", "request_id": record.request_id}
    # The size of the protobuf answer (what 0.38 fetches); encoded now, it is cached for
    # that fetch.
    size = len(record.encoded(True)[0])
    return {
        "state": "finished",
        "request_id": record.request_id,
        "response_payload_uncompressed_size": size,
    }


class ResultsEndpoint:
    """Serves ``POST /api/v1/retrieve_future`` and ``/retrieve_futures``; passes everything
    else to ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in PATHS:
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
        if scope["path"] == RETRIEVE_FUTURES_PATH:
            try:
                await self.retrieve_many(scope, b"".join(chunks), send)
            except APIStatusError as exc:
                await _detail(send, exc.status_code, str(exc))
            return
        await self.retrieve(scope, b"".join(chunks), send)

    async def retrieve_many(self, scope: Scope, raw: bytes, send: Send) -> None:
        """Answer one ``retrieve_futures`` poll (errors raise :class:`APIStatusError`)."""
        state: ServerState = scope["app"].state.server
        req = parse(raw, RetrieveFuturesBody)
        log = _target_log(state, scope["state"]["tenant"], req.target)
        logs = state.pending.logs
        cursor = req.prev_cursor
        if cursor > logs.last_cursor:
            raise bad_request(
                f"prev_cursor: {cursor} is ahead of every cursor this server handed out"
            )
        if cursor < logs.first_cursor:
            # 0, or a cursor of an earlier run of this server: report the whole log.
            cursor = 0
        if req.retrieved_request_ids:
            state.pending.acknowledge(req.retrieved_request_ids, log)
        log.trim(cursor)
        hold = state.settings.poll_hold_seconds
        if req.timeout is not None:
            hold = min(hold, req.timeout)
        if not log.entries and hold > 0 and not state.shutting_down:
            await log.wait(hold)
        if log.closed:
            raise gone(f"sampling session {req.target.sampling_session_id!r} was finished")
        entries = list(log.after(cursor, COMPLETIONS_PER_ANSWER))
        body = {
            "completions": [_completion(record) for _, record in entries],
            "cursor": entries[-1][0] if entries else req.prev_cursor,
        }
        await _send(send, 200, orjson.dumps(body))

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
        record = state.pending.get(request_id, scope["state"]["tenant"])
        if record is None:
            if state.pending.from_earlier_run(request_id):
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
        if record.gone:
            await _detail(send, 410, record.error)
            record.delivered()
            return
        accept = next((v for k, v in scope["headers"] if k == b"accept"), b"")
        data, binary = record.encoded(_PROTO_ACCEPT in accept)
        await _send(send, 200, data, _PROTO_TYPE if binary else _JSON_TYPE)
        record.delivered()
