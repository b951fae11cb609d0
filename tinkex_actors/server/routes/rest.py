"""REST endpoints (protocol §3.8): sessions, training runs, checkpoints, archives.

Checkpoint routes take ``{checkpoint_id}`` with a slash (``weights/<name>``,
``sampler_weights/<name>`` or ``external_weights/<name>``), so one catch-all route per method
parses the rest of the path: ``<kind>/<name>`` (the checkpoint), ``<kind>/<name>/publish``,
``.../ttl``, ``.../archive``, ``.../external_weights_urls``.

The archive endpoint answers 200 ``{"url", "expires"}`` (plus an ``Expires`` header); the URL
is signed, expires (default 15 minutes; ``?expires_in=`` asks for less) and is served by this
server as a streamed, uncompressed tar of the checkpoint's files at the archive root.
``external_weights_urls`` (0.38) answers ``{"urls": {relpath: url}, "expires"}`` for an
external weights export: one signed URL per file, served under :data:`FILES_PREFIX`.
"""

from __future__ import annotations

import time
from email.utils import formatdate
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from tinkex_actors.server.archives import FileStream, TarStream, file_signing_path
from tinkex_actors.server.checkpoints import (
    EXTERNAL_KIND,
    KIND_TO_TYPE,
    LOADABLE_KINDS,
    TinkerPath,
    parse_checkpoint_id,
)
from tinkex_actors.server.http_errors import bad_request, conflict, forbidden, not_found
from tinkex_actors.server.routes._common import (
    JSON,
    SERVER_ONLY,
    answer,
    body,
    idempotent_no_content,
    isotime,
    note_model,
    parse,
    server,
    tenant,
)
from tinkex_actors.server.schemas import TtlBody
from tinkex_actors.server.state import ServerState
from tinkex_actors.server.store import CheckpointRow, RunRow
from tinkex_actors.server.validation import ttl_seconds

__all__ = ["ARCHIVE_PREFIX", "FILES_PREFIX", "router"]

router = APIRouter(prefix="/api/v1")

#: Signed archive downloads live under this prefix (no API key needed).
ARCHIVE_PREFIX = "/api/v1/checkpoint_archives/"
#: Signed downloads of single checkpoint files (external weights) live under this prefix.
FILES_PREFIX = "/api/v1/checkpoint_files/"
_MAX_LIMIT = 1000


def _page(request: Request, default_limit: int) -> tuple[int, int]:
    try:
        limit = int(request.query_params.get("limit", default_limit))
        offset = int(request.query_params.get("offset", 0))
    except ValueError:
        raise bad_request("limit and offset must be integers") from None
    if not 1 <= limit <= _MAX_LIMIT or offset < 0:
        raise bad_request(f"limit must be 1..{_MAX_LIMIT} and offset >= 0")
    return limit, offset


def _accessible(request: Request) -> bool:
    scope = request.query_params.get("access_scope", "owned")
    if scope not in ("owned", "accessible"):
        raise bad_request("access_scope: expected 'owned' or 'accessible'")
    return scope == "accessible"


def _strings(metadata: dict[str, Any] | None) -> dict[str, str] | None:
    return None if metadata is None else {str(k): str(v) for k, v in metadata.items()}


def checkpoint_json(row: CheckpointRow) -> JSON:
    """The wire ``Checkpoint``."""
    return {
        "checkpoint_id": row.checkpoint_id,
        "checkpoint_type": KIND_TO_TYPE[row.kind],
        "time": isotime(row.created_at),
        "tinker_path": str(TinkerPath(row.run_id, row.kind, row.name)),
        "size_bytes": row.size_bytes,
        "public": row.public,
        "user_metadata": _strings(row.user_metadata),
        "expires_at": None if row.expires_at is None else isotime(row.expires_at),
    }


def _run_json(state: ServerState, run: RunRow, owner: str) -> JSON:
    now = time.time()
    latest: dict[str, JSON | None] = {}
    for kind in LOADABLE_KINDS:
        match = state.store.latest_checkpoint(
            run.run_id, kind, public_only=run.owner != owner, now=now
        )
        latest[kind] = checkpoint_json(match) if match else None
    with state.lock:
        live = state.models.get(run.run_id)
    last = max(run.last_request_time, live.last_request_time if live else 0.0)
    return {
        "training_run_id": run.run_id,
        "base_model": run.base_model,
        "model_owner": run.owner,
        "is_lora": True,
        "corrupted": False,
        "lora_rank": run.lora_rank,
        "last_request_time": isotime(last),
        "last_checkpoint": latest["weights"],
        "last_sampler_checkpoint": latest["sampler_weights"],
        "user_metadata": _strings(run.user_metadata),
    }


# ---------------------------------------------------------------------- sessions
@router.get("/sessions")
async def list_sessions(request: Request) -> Response:
    """The caller's session ids, newest first."""
    limit, offset = _page(request, 20)
    ids, total = server(request).store.list_sessions(tenant(request), limit, offset)
    cursor = {"offset": offset, "limit": limit, "total_count": total}
    return answer({"sessions": ids, "cursor": cursor})


@router.get("/sessions/{session_id}")
async def get_session(request: Request, session_id: str) -> Response:
    """A session's training runs and samplers."""
    state = server(request)
    row = state.owned_session(tenant(request), session_id, active=False)
    runs, samplers = state.store.session_children(session_id)
    return answer(
        {
            "training_run_ids": runs,
            "sampler_ids": samplers,
            "user_metadata": _strings(row.user_metadata),
            "display_name": row.display_name,
        }
    )


# ---------------------------------------------------------------------- training runs
@router.get("/training_runs")
async def list_training_runs(request: Request) -> Response:
    """The caller's runs (plus runs with published checkpoints for ``accessible``)."""
    limit, offset = _page(request, 20)
    state, owner = server(request), tenant(request)
    runs, total = state.store.list_runs(
        owner, accessible=_accessible(request), now=time.time(), limit=limit, offset=offset
    )
    return answer(
        {
            "training_runs": [_run_json(state, run, owner) for run in runs],
            "cursor": {"offset": offset, "limit": limit, "total_count": total},
        }
    )


@router.get("/training_runs/{run_id}")
async def get_training_run(request: Request, run_id: str) -> Response:
    """One run with its newest training and sampler checkpoints."""
    state, owner = server(request), tenant(request)
    note_model(request.scope, run_id)
    run = state.visible_run(owner, run_id, accessible=_accessible(request))
    return answer(_run_json(state, run, owner))


@router.get("/training_runs/{run_id}/checkpoints")
async def list_run_checkpoints(request: Request, run_id: str) -> Response:
    """A run's checkpoints, newest first (others see only published ones)."""
    limit, offset = _page(request, _MAX_LIMIT)
    state, owner = server(request), tenant(request)
    note_model(request.scope, run_id)
    run = state.visible_run(owner, run_id)
    rows, total = state.store.list_run_checkpoints(
        run_id, public_only=run.owner != owner, now=time.time(), limit=limit, offset=offset
    )
    return answer(
        {
            "checkpoints": [checkpoint_json(r) for r in rows],
            "cursor": {"offset": offset, "limit": limit, "total_count": total},
        }
    )


@router.get("/checkpoints")
async def list_user_checkpoints(request: Request) -> Response:
    """Every checkpoint of the caller's runs, newest first."""
    limit, offset = _page(request, 100)
    state = server(request)
    rows, total = state.store.list_user_checkpoints(
        tenant(request), now=time.time(), limit=limit, offset=offset
    )
    return answer(
        {
            "checkpoints": [checkpoint_json(r) for r in rows],
            "cursor": {"offset": offset, "limit": limit, "total_count": total},
        }
    )


# ---------------------------------------------------------------------- one checkpoint
def _target(run_id: str, rest: str, actions: tuple[str, ...]) -> tuple[TinkerPath, str]:
    """Split ``<kind>/<name>[/<action>]`` into the checkpoint and the action ('' for none)."""
    parts = rest.split("/")
    action = ""
    if len(parts) == 3 and parts[2] in actions:
        action = parts.pop()
    kind, name = parse_checkpoint_id("/".join(parts))
    return TinkerPath(run_id, kind, name), action


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _lifetime(request: Request, state: ServerState) -> int:
    """A signed URL's lifetime: the server's, or less when ``?expires_in=`` asks for it."""
    lifetime = state.settings.archive_url_ttl
    if "expires_in" in request.query_params:
        try:
            lifetime = min(lifetime, max(1, int(request.query_params["expires_in"])))
        except ValueError:
            raise bad_request("expires_in: expected an integer number of seconds") from None
    return lifetime


@router.delete("/training_runs/{run_id}/checkpoints/{rest:path}")
async def delete_checkpoint(request: Request, run_id: str, rest: str) -> Response:
    """Delete a checkpoint and its files, or (``.../publish``) unpublish it."""
    state, owner = server(request), tenant(request)
    note_model(request.scope, run_id)
    path, action = _target(run_id, rest, ("publish",))

    async def act() -> None:
        row = state.owned_checkpoint(owner, path)
        if action == "publish":
            if not row.public:
                raise conflict(f"checkpoint {path} is not published")
            state.store.set_public(path.run_id, path.checkpoint_id, False)
            return
        dir_name = state.store.delete_checkpoint(path.run_id, path.checkpoint_id)
        if dir_name is not None:
            state.files.remove(dir_name)

    return await idempotent_no_content(request, await body(request), act)


@router.post("/training_runs/{run_id}/checkpoints/{rest:path}")
async def publish_checkpoint(request: Request, run_id: str, rest: str) -> Response:
    """``.../publish``: make a checkpoint readable and sampleable by every key."""
    state, owner = server(request), tenant(request)
    note_model(request.scope, run_id)
    path, action = _target(run_id, rest, ("publish",))
    if action != "publish":
        raise not_found(f"no POST endpoint for checkpoint {path}")

    async def act() -> None:
        row = state.owned_checkpoint(owner, path)
        if row.public:
            raise conflict(f"checkpoint {path} is already published")
        state.store.set_public(path.run_id, path.checkpoint_id, True)

    return await idempotent_no_content(request, await body(request), act)


@router.put("/training_runs/{run_id}/checkpoints/{rest:path}")
async def set_ttl(request: Request, run_id: str, rest: str) -> Response:
    """``.../ttl`` with ``{"ttl_seconds": int | null}``: expire that long from now (or never)."""
    state, owner = server(request), tenant(request)
    note_model(request.scope, run_id)
    path, action = _target(run_id, rest, ("ttl",))
    if action != "ttl":
        raise not_found(f"no PUT endpoint for checkpoint {path}")
    raw = await body(request)
    req = parse(raw, TtlBody)
    ttl = ttl_seconds(req.ttl_seconds, state.settings.min_ttl_seconds)

    async def act() -> None:
        state.owned_checkpoint(owner, path)
        expires = None if ttl is None else time.time() + ttl
        state.store.set_expiry(path.run_id, path.checkpoint_id, expires)

    return await idempotent_no_content(request, raw, act)


@router.get("/training_runs/{run_id}/checkpoints/{rest:path}")
async def checkpoint_download_urls(request: Request, run_id: str, rest: str) -> Response:
    """Signed download URLs: ``.../archive`` (one tar) or ``.../external_weights_urls``."""
    state, owner = server(request), tenant(request)
    note_model(request.scope, run_id)
    path, action = _target(run_id, rest, ("archive", "external_weights_urls"))
    if action == "external_weights_urls":
        return _external_weights_urls(request, state, owner, path)
    if action != "archive":
        raise not_found(
            f"no GET endpoint for checkpoint {path} (expected .../archive or "
            ".../external_weights_urls)"
        )
    state.visible_checkpoint(owner, path)
    expires = int(time.time()) + _lifetime(request, state)
    signed = f"{path.run_id}/{path.kind}/{path.name}"
    url = (
        f"{_base_url(request)}{ARCHIVE_PREFIX}{quote(path.run_id, safe=':')}/"
        f"{path.kind}/{quote(path.name)}?expires={expires}"
        f"&signature={state.signer.sign(signed, expires)}"
    )
    return answer(
        {"url": url, "expires": isotime(expires)},
        headers={"Expires": formatdate(expires, usegmt=True)},
    )


def _external_weights_urls(
    request: Request, state: ServerState, owner: str, path: TinkerPath
) -> Response:
    """One signed URL per file of an external weights export, all expiring together."""
    if path.kind != EXTERNAL_KIND:
        raise bad_request(
            f"checkpoint {path} is not external weights; per-file URLs exist only for "
            "tinker://<run>/external_weights/<name> (from save_weights_external)"
        )
    row, _ = state.visible_checkpoint(owner, path)
    expires = int(time.time()) + _lifetime(request, state)
    prefix = (
        f"{_base_url(request)}{FILES_PREFIX}{quote(path.run_id, safe=':')}/"
        f"{path.kind}/{quote(path.name)}/"
    )
    urls = {
        relpath: (
            f"{prefix}{quote(relpath)}?expires={expires}&signature="
            f"{state.signer.sign(file_signing_path(*_parts(path), relpath), expires)}"
        )
        for relpath in state.files.files(row.dir_name)
    }
    return answer(
        {"urls": urls, "expires": isotime(expires)},
        headers={"Expires": formatdate(expires, usegmt=True)},
    )


def _parts(path: TinkerPath) -> tuple[str, str, str]:
    return path.run_id, path.kind, path.name


def _signed_checkpoint(
    request: Request, state: ServerState, signed: str, run_id: str, checkpoint_id: str, what: str
) -> CheckpointRow:
    """The checkpoint behind a signed URL: 403 for a bad or stale signature, 404 once it is gone."""
    try:
        expires = int(request.query_params.get("expires", ""))
    except ValueError:
        raise forbidden(f"invalid or expired {what}") from None
    signature = request.query_params.get("signature", "")
    if not state.signer.verify(signed, expires, signature, time.time()):
        raise forbidden(f"invalid or expired {what}")
    row = state.store.get_checkpoint(run_id, checkpoint_id, time.time())
    if row is None:
        raise not_found(f"checkpoint tinker://{run_id}/{checkpoint_id} no longer exists")
    return row


@router.get(ARCHIVE_PREFIX.removeprefix("/api/v1") + "{run_id}/{kind}/{name}", tags=SERVER_ONLY)
async def download_archive(request: Request, run_id: str, kind: str, name: str) -> Response:
    """The tar behind a signed URL (no API key: the signature is the permission)."""
    state = server(request)
    signed = f"{run_id}/{kind}/{name}"
    row = _signed_checkpoint(request, state, signed, run_id, f"{kind}/{name}", "archive URL")
    try:
        stream = TarStream(state.files.path(row.dir_name))
    except FileNotFoundError:
        raise not_found(f"checkpoint tinker://{run_id}/{kind}/{name} no longer exists") from None
    return StreamingResponse(
        iter(stream),
        media_type="application/x-tar",
        headers={
            "Content-Length": str(stream.size),
            "Content-Disposition": f'attachment; filename="{name}.tar"',
        },
    )


@router.get(
    FILES_PREFIX.removeprefix("/api/v1") + "{run_id}/{kind}/{name}/{relpath:path}",
    tags=SERVER_ONLY,
)
async def download_file(
    request: Request, run_id: str, kind: str, name: str, relpath: str
) -> Response:
    """One checkpoint file behind a signed URL (no API key: the signature is the permission)."""
    state = server(request)
    signed = file_signing_path(run_id, kind, name, relpath)
    row = _signed_checkpoint(request, state, signed, run_id, f"{kind}/{name}", "download URL")
    path = f"tinker://{run_id}/{kind}/{name}"
    root = state.files.path(row.dir_name).resolve()
    target = (root / relpath).resolve()
    if not target.is_relative_to(root):  # signed paths come from files(); belt and braces
        raise forbidden("invalid or expired download URL")
    try:
        stream = FileStream(target)
    except FileNotFoundError:
        raise not_found(f"{relpath} of checkpoint {path} no longer exists") from None
    return StreamingResponse(
        iter(stream),
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(stream.size),
            "Content-Disposition": f'attachment; filename="{target.name}"',
        },
    )
