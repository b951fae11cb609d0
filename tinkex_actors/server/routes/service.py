"""Service, auth and session endpoints (protocol §1.2, §3.1, §3.2, §3.9)."""

from __future__ import annotations

import secrets
import time

from fastapi import APIRouter, Request, Response

from tinkex_actors.server.http_errors import not_found, unauthorized
from tinkex_actors.server.middleware import CREDENTIAL_KEY
from tinkex_actors.server.routes._common import (
    JSON,
    answer,
    body,
    idempotent,
    parse,
    server,
    tenant,
)
from tinkex_actors.server.schemas import CreateSessionBody, FinishSessionBody, SessionIdBody
from tinkex_actors.server.settings import ENGINE_WAIT_TIMEOUT, JWT_CLIENT_FLAG
from tinkex_actors.server.store import SESSION_ACTIVE, SESSION_FINISHED, SessionRow

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")


@router.get("/healthz")
async def healthz() -> Response:
    """``{"status": "ok"}`` once the HTTP layer is up (the engine may still be warming up)."""
    return answer({"status": "ok"})


@router.post("/client/config")
async def client_config(request: Request) -> Response:
    """Feature flags for the official SDK (``{}`` unless configured; ``--jwt-auth`` adds
    ``pjwt_auth_enabled``)."""
    state = server(request)
    flags = dict(state.settings.client_config)
    if state.tokens is not None:
        flags[JWT_CLIENT_FLAG] = True
    return answer(flags)


@router.post("/auth/token")
async def auth_token(request: Request) -> Response:
    """Exchange the API key in ``X-API-Key`` for a JWT: ``{"jwt": "<token>"}``.

    404 when the server runs without ``--jwt-auth``; 401 when the caller sent a JWT (only a
    key can be exchanged, so a token cannot extend itself).
    """
    state = server(request)
    if state.tokens is None:
        raise not_found("JWT auth is not enabled on this server (start it with --jwt-auth)")
    if request.scope["state"].get("credential") != CREDENTIAL_KEY:
        raise unauthorized("auth/token exchanges an API key (tml-...), not a JWT")
    return answer({"jwt": state.tokens.issue(tenant(request))})


@router.post("/client/dynamic_config")
async def dynamic_config() -> Response:
    """No dynamic flags: the SDK keeps its defaults."""
    return answer({})


@router.post("/telemetry")
async def telemetry() -> Response:
    """Telemetry is accepted and discarded."""
    return answer({"status": "accepted"})


@router.get("/get_server_capabilities")
async def capabilities(request: Request) -> Response:
    """The served base models."""
    state = server(request)
    await state.host.wait(ENGINE_WAIT_TIMEOUT)
    models = [
        {
            "model_name": info.name,
            "max_context_length": info.max_context_length,
            "trainable": True,
            "sampleable": True,
        }
        for info in state.host.models().values()
    ]
    return answer({"supported_models": models})


@router.post("/create_session")
async def create_session(request: Request) -> Response:
    """A new session owned by the caller."""
    raw = await body(request)
    req = parse(raw, CreateSessionBody)
    state, owner = server(request), tenant(request)

    async def produce() -> JSON:
        now = time.time()
        session_id = f"session-{secrets.token_hex(8)}"
        state.store.insert_session(
            SessionRow(
                session_id=session_id,
                owner=owner,
                created_at=now,
                last_heartbeat=now,
                tags=list(req.tags),
                user_metadata=req.user_metadata,
                sdk_version=req.sdk_version,
                project_id=req.project_id,
                display_name=req.display_name,
            )
        )
        state.log.debug("tinkex.server.session_created", session_id=session_id)
        return {"session_id": session_id, "type": "create_session"}

    return await idempotent(request, raw, produce)


@router.post("/session_heartbeat")
async def heartbeat(request: Request) -> Response:
    """Keep a session alive: 404 unknown, 410 finished or expired."""
    req = parse(await body(request), SessionIdBody)
    state = server(request)
    state.owned_session(tenant(request), req.session_id)
    state.store.touch_session(req.session_id, time.time())
    return answer({"type": "session_heartbeat"})


@router.post("/sessions/{session_id}/finish")
async def finish_session(request: Request, session_id: str) -> Response:
    """End a session: its live adapters and samplers are released (runs and checkpoints stay).

    Finishing a session that already ended (finished, expired) is a no-op (204).
    """
    parse(await body(request), FinishSessionBody)
    state = server(request)
    row = state.owned_session(tenant(request), session_id, active=False)
    if row.status == SESSION_ACTIVE:
        state.store.set_session_status(session_id, SESSION_FINISHED)
        state.on_session_end(session_id)
    return Response(status_code=204)
