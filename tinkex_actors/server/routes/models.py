"""Model endpoints: create_model, get_info, unload_model (protocol §3.3).

create_model takes ``optimizer_config`` (``{"type": "adamw"}``, the default, or
``{"type": "dimuon", "version": 1}``); get_info reports it.

Model ids are ``{session_id}:train:{model_seq_id}``, the same shape the official SDK derives
for create-via-load, and they double as training run ids. Creation is the lane's implicit
``seq_id`` 0, so it runs before the model's first numbered request.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response

from tinkex_actors.server.engine_api import (
    BaseModelInfo,
    EngineUserError,
    LoraSpec,
    OptimizerSpec,
)
from tinkex_actors.server.http_errors import bad_request, conflict, not_found
from tinkex_actors.server.pending import ResultKind
from tinkex_actors.server.routes._common import (
    JSON,
    answer,
    body,
    idempotent,
    parse,
    server,
    submit,
    tenant,
)
from tinkex_actors.server.schemas import CreateModelBody, ModelIdBody
from tinkex_actors.server.settings import ENGINE_WAIT_TIMEOUT
from tinkex_actors.server.state import LiveModel, ServerState
from tinkex_actors.server.store import RunRow
from tinkex_actors.server.validation import lora_spec, optimizer_spec

__all__ = ["claim_model_id", "release_session_models", "router", "unload_job"]

router = APIRouter(prefix="/api/v1")

#: Model ids for create_model requests that omit model_seq_id.
_anonymous = itertools.count(1_000_000)
CREATE_SEQ_ID = 0


def claim_model_id(
    state: ServerState,
    *,
    owner: str,
    session_id: str,
    model_seq_id: int | None,
    base: BaseModelInfo,
    lora: LoraSpec,
    optimizer: OptimizerSpec | None = None,
) -> LiveModel:
    """Register a model being created; 409 when its id is taken."""
    seq = next(_anonymous) if model_seq_id is None else model_seq_id
    if seq < 0:
        raise bad_request(f"model_seq_id: expected >= 0, got {seq}")
    model_id = f"{session_id}:train:{seq}"
    model = LiveModel(
        model_id=model_id,
        tenant=owner,
        session_id=session_id,
        base=base,
        lora=lora,
        optimizer=optimizer or OptimizerSpec(),
    )
    with state.lock:
        if model_id in state.models or state.store.get_run(model_id) is not None:
            raise conflict(f"model {model_id!r} already exists")
        state.models[model_id] = model
    return model


def forget_model(state: ServerState, model_id: str) -> Callable[[], None]:
    """A cleanup that unregisters a model whose creation failed."""

    def cleanup() -> None:
        with state.lock:
            state.models.pop(model_id, None)
        state.scheduler.remove_lane(model_id)

    return cleanup


def record_run(state: ServerState, model: LiveModel, user_metadata: dict[str, Any] | None) -> None:
    """Write the training run row of a freshly created model."""
    now = time.time()
    state.store.insert_run(
        RunRow(
            run_id=model.model_id,
            owner=model.tenant,
            session_id=model.session_id,
            base_model=model.base.name,
            lora_rank=model.lora.rank,
            train_mlp=model.lora.train_mlp,
            train_attn=model.lora.train_attn,
            train_unembed=model.lora.train_unembed,
            seed=model.lora.seed,
            user_metadata=user_metadata,
            created_at=now,
            last_request_time=now,
        )
    )


@router.post("/create_model")
async def create_model(request: Request) -> Response:
    """Create a LoRA adapter; the future's result is ``{"model_id"}``."""
    raw = await body(request)
    req = parse(raw, CreateModelBody)
    state, owner = server(request), tenant(request)
    state.owned_session(owner, req.session_id)
    await state.host.wait(ENGINE_WAIT_TIMEOUT)
    base = state.base_info(req.base_model)
    lora = lora_spec(req.lora_config)
    optimizer = optimizer_spec(req.optimizer_config)

    async def produce() -> JSON:
        model = claim_model_id(
            state,
            owner=owner,
            session_id=req.session_id,
            model_seq_id=req.model_seq_id,
            base=base,
            lora=lora,
            optimizer=optimizer,
        )

        def run() -> JSON:
            state.host.engine.create_adapter(model.model_id, base.name, lora, optimizer)
            try:
                record_run(state, model, req.user_metadata)
            except BaseException:
                state.host.engine.drop_adapter(model.model_id)
                raise
            return {"model_id": model.model_id, "type": "create_model"}

        return submit(
            state,
            tenant_id=owner,
            lane=model.model_id,
            kind=ResultKind.JSON,
            run=run,
            raw=raw,
            seq_id=CREATE_SEQ_ID,
            on_failure=forget_model(state, model.model_id),
        )

    return await idempotent(request, raw, produce)


def _recorded_optimizer(state: ServerState, run_id: str) -> OptimizerSpec:
    """The optimizer family of a run that is not loaded, as its newest checkpoint records it
    (the run record itself keeps none); AdamW for a run without checkpoints."""
    now = time.time()
    for kind in ("weights", "sampler_weights"):
        row = state.store.latest_checkpoint(run_id, kind, public_only=False, now=now)
        if row is not None:
            try:
                return state.host.engine.read_checkpoint_optimizer(state.files.path(row.dir_name))
            except EngineUserError:
                break
    return OptimizerSpec()


@router.post("/get_info")
async def get_info(request: Request) -> Response:
    """Base model, tokenizer and LoRA settings of a model (live or, after a restart, recorded)."""
    req = parse(await body(request), ModelIdBody)
    state, owner = server(request), tenant(request)
    with state.lock:
        model = state.models.get(req.model_id)
    if model is not None and model.tenant == owner:
        base_name, rank, info = model.base.name, model.lora.rank, model.base
        optimizer = model.optimizer
    else:
        run = state.store.get_run(req.model_id)
        if run is None or run.owner != owner:
            raise not_found(f"unknown model {req.model_id!r}")
        await state.host.wait(ENGINE_WAIT_TIMEOUT)
        base_name, rank = run.base_model, run.lora_rank
        info = state.host.models().get(base_name) or BaseModelInfo(base_name, base_name, 0, 0)
        optimizer = _recorded_optimizer(state, run.run_id)
    return answer(
        {
            "model_id": req.model_id,
            "model_data": {
                "arch": info.arch,
                "model_name": base_name,
                "tokenizer_id": info.tokenizer_id,
            },
            "model_name": base_name,
            "is_lora": True,
            "lora_rank": rank,
            "optimizer_config": optimizer.wire(),
            "type": "get_info",
        }
    )


def unload_job(state: ServerState, model_id: str) -> Callable[[], JSON]:
    """The lane job that drops an adapter and its lane."""

    def run() -> JSON:
        with state.lock:
            state.models.pop(model_id, None)
        state.host.engine.drop_adapter(model_id)
        state.scheduler.remove_lane(model_id)
        state.store.release_model(model_id)  # unloaded on purpose: not "lost" after a restart
        return {"model_id": model_id, "type": "unload_model"}

    return run


@router.post("/unload_model")
async def unload_model(request: Request) -> Response:
    """Drop a model's adapter after its queued work; the run and its checkpoints stay."""
    raw = await body(request)
    req = parse(raw, ModelIdBody)
    state, owner = server(request), tenant(request)

    async def produce() -> JSON:
        # Checked here, not before the idempotency lookup: a retry of an unload whose answer
        # was lost must get that answer, not a 404 for the model it unloaded.
        state.live_model(owner, req.model_id)
        return submit(
            state,
            tenant_id=owner,
            lane=req.model_id,
            kind=ResultKind.JSON,
            run=unload_job(state, req.model_id),
            raw=raw,
        )

    return await idempotent(request, raw, produce)


def release_session_models(state: ServerState, session_id: str) -> None:
    """Queue the unload of every live model of a finished or expired session.

    They leave the registry at once, so no new request reaches them (the calls then say why).
    """
    with state.lock:
        models = [m for m in state.models.values() if m.session_id == session_id]
        for model in models:
            del state.models[model.model_id]
    for model in models:
        submit(
            state,
            tenant_id=model.tenant,
            lane=model.model_id,
            kind=ResultKind.JSON,
            run=unload_job(state, model.model_id),
            raw=b"",
        )
