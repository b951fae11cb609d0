"""``retrieve_future`` (protocol §3.7): long-poll a queued request's result.

A pending future is held up to ``--poll-hold-seconds`` (below the client's 45 s timeout),
then answered ``{"type": "try_again", ...}``. Failures are HTTP 200 ``{"error", "category"}``.
Results of forward_backward and asample are protobuf when ``Accept`` asks for
``application/x-protobuf``, otherwise their legacy JSON shapes; everything else is JSON.
Unknown (or foreign, or evicted) request ids are 404.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request, Response

from tinkex_actors._constants import CONTENT_JSON, CONTENT_PROTOBUF
from tinkex_actors.server.http_errors import bad_request, not_found
from tinkex_actors.server.routes._common import answer, server, tenant

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")


@router.post("/retrieve_future")
async def retrieve_future(request: Request) -> Response:
    """The future's result, its failure, or try_again after the hold."""
    try:
        request_id = orjson.loads(await request.body())["request_id"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise bad_request("expected a JSON body with a string request_id") from None
    if not isinstance(request_id, str):
        raise bad_request("request_id: expected a string")
    state = server(request)
    record = state.futures.get(request_id, tenant(request))
    if record is None:
        raise not_found(f"unknown future {request_id!r} (never issued, expired, or not yours)")
    if not record.done and not state.shutting_down:
        await record.wait(state.settings.poll_hold_seconds)
    if not record.done:
        return answer({"type": "try_again", "request_id": request_id, "queue_state": "active"})
    data, binary = record.encoded(CONTENT_PROTOBUF in request.headers.get("accept", ""))
    return Response(data, media_type=CONTENT_PROTOBUF if binary else CONTENT_JSON)
