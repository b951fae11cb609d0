"""Weights endpoints: save_weights, save_weights_for_sampler, save_weights_external,
load_weights, weights_info (§3.5).

Saves write into a temp directory, fsync, rename and only then record the checkpoint (see
``checkpoints.py``). A name already used by a live checkpoint of the run (or by a save still
queued) is a 409 (``x-should-retry: false``) unless ``overwrite`` is set (save_weights and
named save_weights_for_sampler). ``ttl_seconds`` and ``user_metadata`` are stored with the
checkpoint and shown in listings. ``save_weights_external`` exports the adapter (PEFT files,
optionally age-encrypted, see ``exports.py``) as ``tinker://<run>/external_weights/<name>``,
downloaded file by file through ``external_weights_urls`` (``rest.py``). ``load_weights`` has
two modes: legacy (``model_id`` + ``seq_id``: replace a live adapter's weights) and
create-via-load (``session_id`` + ``model_seq_id``: a new model
``{session_id}:train:{model_seq_id}``).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict

from tinkex_actors.server.checkpoints import EXTERNAL_KIND, TinkerPath, parse_tinker_path
from tinkex_actors.server.engine_api import (
    OPTIMIZER_STATE_FILE,
    EngineUserError,
    LoraSpec,
    OptimizerSpec,
)
from tinkex_actors.server.exports import encrypt_directory, parse_recipients
from tinkex_actors.server.http_errors import bad_request, conflict
from tinkex_actors.server.pending import ResultKind
from tinkex_actors.server.routes._common import (
    JSON,
    SERVER_ONLY,
    answer,
    body,
    idempotent,
    note_model,
    parse,
    server,
    submit,
    submit_once,
    tenant,
)
from tinkex_actors.server.routes.models import (
    CREATE_SEQ_ID,
    claim_model_id,
    forget_model,
    record_run,
)
from tinkex_actors.server.schemas import (
    LoadWeightsBody,
    SaveWeightsBody,
    SaveWeightsForSamplerBody,
    WeightsInfoBody,
)
from tinkex_actors.server.settings import ENGINE_WAIT_TIMEOUT
from tinkex_actors.server.state import LiveModel, LiveSampler, ServerState, digest
from tinkex_actors.server.store import CheckpointRow, SamplerRow
from tinkex_actors.server.validation import checkpoint_name, optimizer_spec, ttl_seconds

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")

#: Checkpoint kind -> the ``type`` of its save's result.
_RESULT_TYPE = {
    "weights": "save_weights",
    "sampler_weights": "save_weights_for_sampler",
    EXTERNAL_KIND: "save_weights_external",
}


class SaveWeightsExternalBody(BaseModel):
    """``save_weights_external`` (0.38): unknown fields ignored, like every request body."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())
    model_id: str
    path: str
    seq_id: int | None = None
    ttl_seconds: int | None = None
    age_encryption_recipients: list[str] | None = None


def _reserve(state: ServerState, path: TinkerPath, overwrite: bool) -> Callable[[], None]:
    """Claim a checkpoint name for a queued save; 409 if taken. Returns the release."""
    slot = (path.run_id, path.checkpoint_id)
    with state.lock:
        if not overwrite and (
            slot in state.reserved
            or state.store.get_checkpoint(path.run_id, path.checkpoint_id, time.time())
        ):
            raise conflict(f"checkpoint {path} already exists (pass overwrite=true to replace it)")
        state.reserved.add(slot)

    def release() -> None:
        with state.lock:
            state.reserved.discard(slot)

    return release


def _save_job(
    state: ServerState,
    model: LiveModel,
    path: TinkerPath,
    *,
    ttl: int | None,
    overwrite: bool,
    metadata: dict[str, Any] | None,
    release: Callable[[], None],
    recipients: list[Any],
) -> Callable[[], JSON]:
    def run() -> JSON:
        try:
            temp = state.files.new_temp()
            try:
                if path.kind == "weights":
                    state.host.engine.save_state(model.model_id, temp, with_optimizer=True)
                else:
                    state.host.engine.save_sampler_weights(model.model_id, temp)
                if recipients:
                    encrypt_directory(temp, recipients)
                dir_name, size = state.files.commit(temp)
            except BaseException:
                state.files.discard(temp)
                raise
            now = time.time()
            row = CheckpointRow(
                run_id=path.run_id,
                checkpoint_id=path.checkpoint_id,
                kind=path.kind,
                name=path.name,
                owner=model.tenant,
                created_at=now,
                size_bytes=size,
                public=False,
                expires_at=None if ttl is None else now + ttl,
                user_metadata=metadata,
                dir_name=dir_name,
            )
            try:
                replaced = state.store.insert_checkpoint(row, replace=overwrite)
            except sqlite3.IntegrityError:
                state.files.remove(dir_name)
                raise conflict(f"checkpoint {path} already exists") from None
            if replaced is not None:
                state.files.remove(replaced)
            result: JSON = {"path": str(path), "type": _RESULT_TYPE[path.kind]}
            if path.kind == EXTERNAL_KIND:
                result["size_bytes"] = size
            return result
        finally:
            release()

    return run


def _queue_save(
    request: Request,
    raw: bytes,
    *,
    kind: str,
    model_id: str,
    name: str | None,
    seq_id: int | None,
    ttl: int | None,
    overwrite: bool,
    metadata: dict[str, Any] | None,
    recipients: list[Any] | None = None,
) -> Callable[[], Any]:
    state, owner = server(request), tenant(request)
    note_model(request.scope, model_id)
    model = state.live_model(owner, model_id)
    name = checkpoint_name(name) if name else f"checkpoint-{time.time_ns()}"
    ttl = ttl_seconds(ttl, state.settings.min_ttl_seconds)
    path = TinkerPath(model_id, kind, name)

    async def produce() -> JSON:
        if seq_id is not None:
            seen = state.scheduler.dedupe(model_id, seq_id, digest(raw))
            if seen is not None:
                return seen
        release = _reserve(state, path, overwrite)
        run = _save_job(
            state,
            model,
            path,
            ttl=ttl,
            overwrite=overwrite,
            metadata=metadata,
            release=release,
            recipients=recipients or [],
        )
        return submit(
            state,
            tenant_id=owner,
            lane=model_id,
            kind=ResultKind.JSON,
            run=run,
            raw=raw,
            seq_id=seq_id,
            on_failure=release,
        )

    return produce


@router.post("/save_weights")
async def save_weights(request: Request) -> Response:
    """Save training state (weights + optimizer): ``tinker://<run>/weights/<name>``."""
    raw = await body(request)
    req = parse(raw, SaveWeightsBody)
    produce = _queue_save(
        request,
        raw,
        kind="weights",
        model_id=req.model_id,
        name=req.path,
        seq_id=req.seq_id,
        ttl=req.ttl_seconds,
        overwrite=req.overwrite,
        metadata=req.user_metadata,
    )
    return await idempotent(request, raw, produce)


@router.post("/save_weights_for_sampler")
async def save_weights_for_sampler(request: Request) -> Response:
    """Named: ``tinker://<run>/sampler_weights/<name>``; unnamed: a new sampling session."""
    raw = await body(request)
    req = parse(raw, SaveWeightsForSamplerBody)
    if req.path:
        produce = _queue_save(
            request,
            raw,
            kind="sampler_weights",
            model_id=req.model_id,
            name=req.path,
            seq_id=req.seq_id,
            ttl=req.ttl_seconds,
            overwrite=req.overwrite,
            metadata=req.user_metadata,
        )
        return await idempotent(request, raw, produce)
    if req.sampling_session_seq_id is None:
        raise bad_request("save_weights_for_sampler needs path or sampling_session_seq_id")
    state, owner = server(request), tenant(request)
    model = state.live_model(owner, req.model_id)
    sampler_id = f"{model.session_id}:sample:{req.sampling_session_seq_id}"

    def run() -> JSON:
        if state.store.get_sampler(sampler_id) is not None:
            raise conflict(f"sampling session {sampler_id!r} already exists")
        state.host.engine.create_sampler(sampler_id, model.base.name, from_model_id=model.model_id)
        state.store.insert_sampler(
            SamplerRow(
                sampler_id=sampler_id,
                owner=owner,
                session_id=model.session_id,
                base_model=model.base.name,
                model_path=None,
                source_model_id=model.model_id,
                created_at=time.time(),
            )
        )
        with state.lock:
            state.samplers[sampler_id] = LiveSampler(sampler_id, owner, model.base)
        return {"sampling_session_id": sampler_id, "type": "save_weights_for_sampler"}

    return await submit_once(
        request, raw, lane=req.model_id, kind=ResultKind.JSON, run=run, seq_id=req.seq_id
    )


@router.post("/save_weights_external", tags=SERVER_ONLY)
async def save_weights_external(request: Request) -> Response:
    """Export the adapter for download: ``tinker://<run>/external_weights/<name>``."""
    raw = await body(request)
    req = parse(raw, SaveWeightsExternalBody)
    if not req.path:
        raise bad_request("path: required (a name for the export)")
    recipients = parse_recipients(req.age_encryption_recipients)
    produce = _queue_save(
        request,
        raw,
        kind=EXTERNAL_KIND,
        model_id=req.model_id,
        name=req.path,
        seq_id=req.seq_id,
        ttl=req.ttl_seconds,
        overwrite=False,
        metadata=None,
        recipients=recipients,
    )
    return await idempotent(request, raw, produce)


def _checkpoint_dir(
    request: Request, path_text: str, *, optimizer: bool
) -> tuple[TinkerPath, Path]:
    state = server(request)
    path = parse_tinker_path(path_text)
    row, _ = state.visible_checkpoint(tenant(request), path)
    directory = state.files.path(row.dir_name)
    if optimizer and not (directory / OPTIMIZER_STATE_FILE).exists():
        raise bad_request(f"path: {path} holds no optimizer state (save it with save_state)")
    return path, directory


def _checkpoint_optimizer(state: ServerState, directory: Path) -> OptimizerSpec:
    """The optimizer family a checkpoint records; 400 when its config is unreadable."""
    try:
        return state.host.engine.read_checkpoint_optimizer(directory)
    except EngineUserError as exc:
        raise bad_request(f"path: {exc}") from None


@router.post("/load_weights")
async def load_weights(request: Request) -> Response:
    """Load a checkpoint into a live model, or create a model from it (create-via-load)."""
    raw = await body(request)
    req = parse(raw, LoadWeightsBody)
    state, owner = server(request), tenant(request)
    path, directory = _checkpoint_dir(request, req.path, optimizer=req.optimizer)
    if req.model_id is not None:
        note_model(request.scope, req.model_id)
        model = state.live_model(owner, req.model_id)
        if req.optimizer:
            await state.host.wait(ENGINE_WAIT_TIMEOUT)
            saved = _checkpoint_optimizer(state, directory)
            if saved.type != model.optimizer.type:
                raise bad_request(
                    f"path: {path} holds {saved.type} optimizer state but model "
                    f"{model.model_id!r} uses {model.optimizer.type}; load it with "
                    "optimizer=false"
                )

        def load() -> JSON:
            state.host.engine.load_state(model.model_id, directory, with_optimizer=req.optimizer)
            return {"path": str(path), "model_id": model.model_id, "type": "load_weights"}

        async def produce() -> JSON:
            return submit(
                state,
                tenant_id=owner,
                lane=model.model_id,
                kind=ResultKind.JSON,
                run=load,
                raw=raw,
                seq_id=req.seq_id,
            )

        return await idempotent(request, raw, produce)
    if req.session_id is None or req.model_seq_id is None:
        raise bad_request("load_weights needs model_id, or session_id and model_seq_id")
    state.owned_session(owner, req.session_id)
    await state.host.wait(ENGINE_WAIT_TIMEOUT)
    _, source = state.visible_checkpoint(owner, path)
    if req.base_model and req.base_model != source.base_model:
        raise bad_request(
            f"base_model: {req.base_model!r} does not match the checkpoint's {source.base_model!r}"
        )
    base = state.base_info(source.base_model)
    # Full-state loads keep the checkpoint's optimizer family; weights-only loads take the
    # body's optimizer_config (AdamW by default).
    if req.optimizer:
        optimizer = _checkpoint_optimizer(state, directory)
        if req.optimizer_config is not None and optimizer_spec(req.optimizer_config) != optimizer:
            raise bad_request(
                f"optimizer_config: {req.optimizer_config} differs from the {optimizer.type} "
                f"optimizer state in {path}; omit it or load with optimizer=false"
            )
    else:
        optimizer = optimizer_spec(req.optimizer_config)
    # Provisional until the job reads the checkpoint's own config.
    lora = LoraSpec(
        rank=source.lora_rank,
        seed=source.seed,
        train_mlp=source.train_mlp,
        train_attn=source.train_attn,
        train_unembed=source.train_unembed,
    )

    async def produce_created() -> JSON:
        model = claim_model_id(
            state,
            owner=owner,
            session_id=str(req.session_id),
            model_seq_id=req.model_seq_id,
            base=base,
            lora=lora,
            optimizer=optimizer,
        )

        def create() -> JSON:
            engine = state.host.engine
            base_name, spec = engine.read_checkpoint_config(directory)
            if base_name != base.name:
                raise bad_request(f"checkpoint {path} is for base model {base_name!r}")
            engine.create_adapter(model.model_id, base_name, spec, optimizer)
            try:
                engine.load_state(model.model_id, directory, with_optimizer=req.optimizer)
                model.lora = spec
                record_run(state, model, req.user_metadata)
            except BaseException:
                engine.drop_adapter(model.model_id)
                raise
            return {"path": str(path), "model_id": model.model_id, "type": "load_weights"}

        return submit(
            state,
            tenant_id=owner,
            lane=model.model_id,
            kind=ResultKind.JSON,
            run=create,
            raw=raw,
            seq_id=CREATE_SEQ_ID,
            on_failure=forget_model(state, model.model_id),
        )

    return await idempotent(request, raw, produce_created)


@router.post("/weights_info")
async def weights_info(request: Request) -> Response:
    """Base model, LoRA settings and optimizer family of a checkpoint the caller can read."""
    req = parse(await body(request), WeightsInfoBody)
    state = server(request)
    path = parse_tinker_path(req.tinker_path, "tinker_path", loadable=False)
    row, run = state.visible_checkpoint(tenant(request), path)
    await state.host.wait(ENGINE_WAIT_TIMEOUT)
    optimizer = _checkpoint_optimizer(state, state.files.path(row.dir_name))
    return answer(
        {
            "base_model": run.base_model,
            "is_lora": True,
            "lora_rank": run.lora_rank,
            "train_unembed": run.train_unembed,
            "train_mlp": run.train_mlp,
            "train_attn": run.train_attn,
            "optimizer_config": optimizer.wire(),
        }
    )
