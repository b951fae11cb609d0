"""Test-only routes under ``/api/v1/_test/`` (served only with ``--test-hooks``).

They let tests provoke what otherwise takes a clock or a fault: a session's expiry, the
rejection of every JWT issued so far, and they report the JWT counters. Each needs an
accepted credential and acts only on the caller's own sessions.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from tinkex_actors.server.http_errors import not_found
from tinkex_actors.server.routes._common import answer, body, parse, server, tenant
from tinkex_actors.server.schemas import SessionIdBody
from tinkex_actors.server.state import ServerState
from tinkex_actors.server.tokens import TokenIssuer

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/_test")


def _tokens(state: ServerState) -> TokenIssuer:
    if state.tokens is None:
        raise not_found("JWT auth is not enabled on this server (start it with --jwt-auth)")
    return state.tokens


@router.post("/expire_session")
async def expire_session(request: Request) -> Response:
    """Expire the caller's session now, as if its heartbeat had stopped:
    ``{"session_id", "expired": bool}`` (false when it had already ended)."""
    req = parse(await body(request), SessionIdBody)
    state = server(request)
    state.owned_session(tenant(request), req.session_id, active=False)
    return answer({"session_id": req.session_id, "expired": state.expire_session(req.session_id)})


@router.post("/rotate_jwt_secret")
async def rotate_jwt_secret(request: Request) -> Response:
    """Sign with a new secret: every JWT issued so far gets 401 ``invalid_token``."""
    _tokens(server(request)).rotate()
    return answer({"rotated": True})


@router.get("/auth_stats")
async def auth_stats(request: Request) -> Response:
    """``{"issued", "accepted", "rejected"}``: JWTs issued, and presented ones accepted or not."""
    tokens = _tokens(server(request))
    return answer(
        {"issued": tokens.issued, "accepted": tokens.accepted, "rejected": tokens.rejected}
    )
