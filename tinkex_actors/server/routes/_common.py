"""Helpers shared by the route modules: request parsing, answers, future submission."""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
import pydantic
from fastapi import Request, Response

from tinkex_actors._constants import CONTENT_JSON, HEADER_IDEMPOTENCY_KEY
from tinkex_actors.server.completions import LogKey
from tinkex_actors.server.futures import ResultKind
from tinkex_actors.server.http_errors import bad_request, too_large
from tinkex_actors.server.scheduler import Job
from tinkex_actors.server.state import ServerState, digest

__all__ = [
    "JSON",
    "answer",
    "body",
    "idempotent",
    "idempotent_no_content",
    "isotime",
    "parse",
    "server",
    "submit",
    "submit_once",
    "tenant",
]

M = TypeVar("M", bound=pydantic.BaseModel)
JSON = dict[str, Any]
_ZSTD_CHUNK = 1 << 20


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
    if encoding in ("", "identity"):
        return raw
    if encoding == "zstd":
        state = server(request)
        return _unzstd(raw, state.settings.max_body_bytes * 16)
    raise bad_request(f"unsupported Content-Encoding {encoding!r} (expected zstd or none)")


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
    future = state.futures.create(tenant_id, kind, state.loop, latency=latency, log_key=log_key)
    response: JSON = {"request_id": future.request_id}
    if lane is not None:
        response["model_id"] = lane
    response.update(extra or {})
    if lane is not None and seq_id is not None:
        state.scheduler.remember(lane, seq_id, fingerprint, response)
    state.scheduler.submit(lane, Job(run=run, future=future, seq_id=seq_id, on_failure=on_failure))
    return response
