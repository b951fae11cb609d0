"""Helpers shared by the route modules: request parsing, answers, future submission.

:func:`body` keeps the request body in the request's scope so that, when the request is
rejected, :func:`release_rejected` can find the model and ``seq_id`` it named and tell the
scheduler that ``seq_id`` is used (the client will not send it again), whichever route and
whichever check rejected it.
"""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypeVar

import orjson
import pydantic
from fastapi import Request, Response
from google.protobuf.message import DecodeError

from tinkex_actors._constants import (
    CONTENT_JSON,
    CONTENT_PROTOBUF,
    HEADER_IDEMPOTENCY_KEY,
    SERVER_MAX_DECOMPRESSION_RATIO,
)
from tinkex_actors._logging import get_logger
from tinkex_actors.server.completions import LogKey
from tinkex_actors.server.http_errors import bad_request, too_large
from tinkex_actors.server.pending import ResultKind
from tinkex_actors.server.request_log import note_model
from tinkex_actors.server.scheduler import Job
from tinkex_actors.server.state import ServerState, digest
from tinkex_actors.wire import tinker_public_pb2 as pb

__all__ = [
    "JSON",
    "SERVER_ONLY",
    "answer",
    "body",
    "idempotent",
    "idempotent_no_content",
    "isotime",
    "note_model",
    "parse",
    "release_rejected",
    "server",
    "submit",
    "submit_once",
    "tenant",
]

M = TypeVar("M", bound=pydantic.BaseModel)
JSON = dict[str, Any]
#: Route tags (``tags=SERVER_ONLY``) of the routes the SDK does not call: every other route
#: under ``/api/v1`` is an endpoint the SDK declares (``tests/test_endpoints.py`` checks both).
SERVER_ONLY: list[str | Enum] = ["server-only"]
_ZSTD_CHUNK = 1 << 20
#: Scope-state key of the (decompressed) request body, for :func:`release_rejected`.
_BODY_KEY = "tinkex.body"
#: Statuses that ask the client to send the same request again: its seq_id stays open.
_RETRY_STATUSES = frozenset({408, 429})


def server(request: Request) -> ServerState:
    """The running server's state."""
    state: ServerState = request.app.state.server
    return state


def tenant(request: Request) -> str:
    """The caller's tenant id (the guard middleware has checked the key)."""
    value: str = request.scope["state"]["tenant"]
    return value


def answer(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response (orjson: non-finite floats become null)."""
    return Response(orjson.dumps(payload), status, headers, media_type=CONTENT_JSON)


def isotime(seconds: float) -> str:
    """ISO-8601 UTC timestamp."""
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat().replace("+00:00", "Z")


def _unzstd(raw: bytes, limit: int) -> bytes:
    import zstandard

    out = io.BytesIO()
    try:
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw)) as reader:
            while chunk := reader.read(_ZSTD_CHUNK):
                out.write(chunk)
                if out.tell() > limit:
                    raise too_large(f"decompressed body exceeds {limit} bytes")
    except zstandard.ZstdError as exc:
        raise bad_request(f"malformed zstd body: {exc}") from exc
    return out.getvalue()


async def body(request: Request) -> bytes:
    """The request body, zstd-decompressed when ``Content-Encoding: zstd``."""
    raw = await request.body()
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding == "zstd":
        state = server(request)
        raw = _unzstd(raw, state.settings.max_body_bytes * SERVER_MAX_DECOMPRESSION_RATIO)
    elif encoding not in ("", "identity"):
        raise bad_request(f"unsupported Content-Encoding {encoding!r} (expected zstd or none)")
    request.scope.setdefault("state", {})[_BODY_KEY] = raw
    return raw


def _sequenced(request: Request, raw: bytes) -> tuple[str, int] | None:
    """The ``(model_id, seq_id)`` a body names, if it names both (a model's ordered request)."""
    if CONTENT_PROTOBUF in request.headers.get("content-type", ""):
        try:
            message = pb.ForwardBackwardRequest.FromString(raw)
        except DecodeError:
            return None
        model_id: object = message.model_id
        seq_id: object = message.seq_id
    else:
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(parsed, dict):
            return None
        model_id, seq_id = parsed.get("model_id"), parsed.get("seq_id")
    if not isinstance(model_id, str) or not model_id:
        return None
    if not isinstance(seq_id, int) or isinstance(seq_id, bool) or seq_id < 1:
        return None
    return model_id, seq_id


def release_rejected(request: Request, status: int) -> None:
    """After a 4xx answer: count the ``seq_id`` the request named as used on its model's lane.

    The official SDK never sends a ``seq_id`` again once it was answered (protocol §5.5), so
    waiting for it would hold the model's later requests for the whole gap timeout. 408 and
    429 ask for the same request again and keep it open; so does a body that cannot be read
    (then the lane waits out the gap as for a request that never arrived). Only the caller's
    own live models are affected.
    """
    if not 400 <= status < 500 or status in _RETRY_STATUSES:
        return
    scope_state = request.scope.get("state") or {}
    raw = scope_state.get(_BODY_KEY)
    if not isinstance(raw, bytes):
        return
    target = _sequenced(request, raw)
    if target is None:
        return
    model_id, seq_id = target
    note_model(request.scope, model_id)
    state = server(request)
    with state.lock:
        model = state.models.get(model_id)
    if model is None or model.tenant != scope_state.get("tenant"):
        return
    if state.scheduler.consume(model_id, seq_id):
        get_logger("server").debug(
            "tinkex.server.seq_consumed", model_id=model_id, seq_id=seq_id, status=status
        )


def parse(raw: bytes, model: type[M]) -> M:
    """Validate a JSON body; 400 naming every bad field."""
    try:
        return model.model_validate_json(raw or b"{}")
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
            for err in exc.errors(include_url=False)
        )
        raise bad_request(
            f"invalid {model.__name__.removesuffix('Body')} request: {problems}"
        ) from None


async def idempotent(request: Request, raw: bytes, produce: Callable[[], Any]) -> Response:
    """Run ``produce`` (an async callable returning a JSON dict) once per idempotency key."""
    state = server(request)
    result = await state.idempotency.run(
        tenant(request),
        request.headers.get(HEADER_IDEMPOTENCY_KEY),
        request.url.path,
        digest(raw),
        produce,
    )
    return answer(result)


async def idempotent_no_content(
    request: Request, raw: bytes, act: Callable[[], Awaitable[None]]
) -> Response:
    """Run ``act`` once per idempotency key and answer 204 (repeats answer 204 too).

    A REST change retried after its answer was lost (delete, publish, set TTL) must not fail
    on the state its first run left (404 "no such checkpoint", 409 "already published").
    """

    async def produce() -> JSON:
        await act()
        return {}

    state = server(request)
    await state.idempotency.run(
        tenant(request),
        request.headers.get(HEADER_IDEMPOTENCY_KEY),
        request.url.path,
        digest(raw),
        produce,
    )
    return Response(status_code=204)


async def submit_once(
    request: Request,
    raw: bytes,
    *,
    lane: str,
    kind: ResultKind,
    run: Callable[[], Any],
    seq_id: int | None,
    latency: float = 0.0,
) -> Response:
    """:func:`submit` the caller's engine work on ``lane``, once per idempotency key."""
    state, owner = server(request), tenant(request)
    note_model(request.scope, lane)

    async def produce() -> JSON:
        return submit(
            state,
            tenant_id=owner,
            lane=lane,
            kind=kind,
            run=run,
            raw=raw,
            seq_id=seq_id,
            latency=latency,
        )

    return await idempotent(request, raw, produce)


def submit(
    state: ServerState,
    *,
    tenant_id: str,
    lane: str | None,
    kind: ResultKind,
    run: Callable[[], Any],
    raw: bytes,
    seq_id: int | None = None,
    on_failure: Callable[[], None] | None = None,
    extra: JSON | None = None,
    latency: float = 0.0,
    log_key: LogKey | None = None,
) -> JSON:
    """Queue engine work and return the untyped future ``{"request_id", ...}``.

    A repeated ``(lane, seq_id)`` with the same body returns the first future; with a
    different body it is a 409 (see :meth:`Scheduler.dedupe`). ``latency`` (seconds) delays
    when the outcome becomes visible (the latency model); ``log_key`` names the completion
    log that reports it to ``retrieve_futures``.
    """
    fingerprint = digest(raw)
    if lane is not None and seq_id is not None:
        seen = state.scheduler.dedupe(lane, seq_id, fingerprint)
        if seen is not None:
            return seen
    future = state.pending.create(tenant_id, kind, state.loop, latency=latency, log_key=log_key)
    response: JSON = {"request_id": future.request_id}
    if lane is not None:
        response["model_id"] = lane
    response.update(extra or {})
    if lane is not None and seq_id is not None:
        state.scheduler.remember(lane, seq_id, fingerprint, response)
    state.scheduler.submit(lane, Job(run=run, future=future, seq_id=seq_id, on_failure=on_failure))
    return response
