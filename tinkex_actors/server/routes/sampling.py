"""Sampling endpoints: create_sampling_session, samplers/{id}, asample (protocol §3.6).

Sampling session ids are ``{session_id}:sample:{sampling_session_seq_id}``. A sampler built
from saved weights keeps a copy in memory, so deleting its checkpoint later leaves it working.
After a restart, samplers made from a base model or a checkpoint path are rebuilt on their
next request; those made from a live adapter (``save_weights_and_get_sampling_client``) are
gone with the adapter (404).
"""

from __future__ import annotations

import time
from pathlib import Path

from fastapi import APIRouter, Request, Response

from tinkex_actors._constants import SAMPLE_SEQ_ID_STRIDE
from tinkex_actors.errors import APIStatusError
from tinkex_actors.server.checkpoints import TinkerPath, parse_tinker_path
from tinkex_actors.server.codec_json import decode_model_input
from tinkex_actors.server.engine_api import BaseModelInfo, EngineNotFoundError, SampleResult
from tinkex_actors.server.http_errors import bad_request, conflict, gone, not_found, rate_limited
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
from tinkex_actors.server.schemas import CreateSamplingSessionBody, SampleBody
from tinkex_actors.server.settings import ENGINE_WAIT_TIMEOUT
from tinkex_actors.server.state import LiveSampler, ServerState
from tinkex_actors.server.store import SamplerRow
from tinkex_actors.server.validation import sample_spec

__all__ = ["release_session_samplers", "router"]

router = APIRouter(prefix="/api/v1")


def _weights_source(
    state: ServerState, owner: str, model_path: str
) -> tuple[TinkerPath, Path, BaseModelInfo]:
    path = parse_tinker_path(model_path, "model_path")
    row, run = state.visible_checkpoint(owner, path)
    return path, state.files.path(row.dir_name), state.base_info(run.base_model)


@router.post("/create_sampling_session")
async def create_sampling_session(request: Request) -> Response:
    """A sampler over a base model or a checkpoint (``model_path``)."""
    raw = await body(request)
    req = parse(raw, CreateSamplingSessionBody)
    state, owner = server(request), tenant(request)
    state.owned_session(owner, req.session_id)
    if not req.base_model and not req.model_path:
        raise bad_request("create_sampling_session needs base_model or model_path")
    await state.host.wait(ENGINE_WAIT_TIMEOUT)
    weights_dir: Path | None = None
    if req.model_path:
        path, weights_dir, base = _weights_source(state, owner, req.model_path)
        model_path: str | None = str(path)
        if req.base_model and req.base_model != base.name:
            raise bad_request(f"base_model: {req.base_model!r} does not match {model_path}")
    else:
        base, model_path = state.base_info(str(req.base_model)), None
    sampler_id = f"{req.session_id}:sample:{req.sampling_session_seq_id}"

    async def produce() -> JSON:
        existing = state.store.get_sampler(sampler_id)
        if existing is not None:
            if existing.model_path != model_path or existing.base_model != base.name:
                raise conflict(f"sampling session {sampler_id!r} already exists")
            return {"sampling_session_id": sampler_id, "type": "create_sampling_session"}
        await state.scheduler.run_sync(
            lambda: state.host.engine.create_sampler(sampler_id, base.name, weights_dir=weights_dir)
        )
        state.store.insert_sampler(
            SamplerRow(
                sampler_id=sampler_id,
                owner=owner,
                session_id=req.session_id,
                base_model=base.name,
                model_path=model_path,
                source_model_id=None,
                created_at=time.time(),
            )
        )
        with state.lock:
            state.samplers[sampler_id] = LiveSampler(sampler_id, owner, base)
        return {"sampling_session_id": sampler_id, "type": "create_sampling_session"}

    return await idempotent(request, raw, produce)


@router.get("/samplers/{sampler_id}")
async def get_sampler(request: Request, sampler_id: str) -> Response:
    """``{"sampler_id", "base_model", "model_path"?}``."""
    row = server(request).store.get_sampler(sampler_id)
    if row is None or row.owner != tenant(request):
        raise not_found(f"unknown sampler {sampler_id!r}")
    result: JSON = {"sampler_id": row.sampler_id, "base_model": row.base_model}
    if row.model_path:
        result["model_path"] = row.model_path
    return answer(result)


def _stored_source(
    state: ServerState, owner: str, sampler_id: str
) -> tuple[BaseModelInfo, Path | None]:
    """(base model, weights) a sampling session the engine does not hold is rebuilt from; 404
    when it is unknown, foreign, or was a snapshot of a live adapter (nothing to rebuild)."""
    row = state.store.get_sampler(sampler_id)
    if row is None or row.owner != owner:
        raise not_found(f"unknown sampling session {sampler_id!r}")
    if row.model_path:
        _, weights_dir, base = _weights_source(state, owner, row.model_path)
        return base, weights_dir
    if row.source_model_id:
        raise not_found(
            f"sampling session {sampler_id!r} held a snapshot of a live adapter that is no "
            "longer loaded (server restart or finished session); save the weights with a "
            "name and sample from that path"
        )
    return state.base_info(row.base_model), None


def _resolve(
    state: ServerState, owner: str, req: SampleBody
) -> tuple[str, BaseModelInfo, Path | None]:
    """(sampler id, base model, weights to rebuild it from) for an asample request."""
    if req.sampling_session_id:
        sampler_id = req.sampling_session_id
        with state.lock:
            live = state.samplers.get(sampler_id)
        if live is not None and live.tenant == owner:
            return sampler_id, live.base, None
        return sampler_id, *_stored_source(state, owner, sampler_id)
    if req.model_path:
        path, weights_dir, base = _weights_source(state, owner, req.model_path)
        return f"path:{owner}:{path}", base, weights_dir
    if req.base_model:
        return f"base:{req.base_model}", state.base_info(req.base_model), None
    raise bad_request("asample needs sampling_session_id, model_path or base_model")


def _apply_last_n(result: SampleResult, last_n: int) -> SampleResult:
    cut = len(result.prompt_logprobs or []) - last_n
    if result.prompt_logprobs is not None:
        scores = result.prompt_logprobs
        result.prompt_logprobs = [None if i < cut else v for i, v in enumerate(scores)]
    if result.topk_prompt_logprobs is not None:
        rows = result.topk_prompt_logprobs
        result.topk_prompt_logprobs = [None if i < cut else r for i, r in enumerate(rows)]
    return result


@router.post("/asample")
async def asample(request: Request) -> Response:
    """Queue a sample; the answer has one ``sample_sequence_ids`` entry per sequence.

    A tenant over its ``--rate-limit`` gets 429 with ``retry-after`` before anything is read.
    """
    state, owner = server(request), tenant(request)
    wait = state.rate_limiter.admit(owner)
    if wait:
        raise rate_limited(f"sampling rate limit exceeded; retry in {wait:.2f}s", wait)
    raw = await body(request)
    req = parse(raw, SampleBody)
    await state.host.wait(ENGINE_WAIT_TIMEOUT)
    sampler_id, base, weights_dir = _resolve(state, owner, req)
    spec, target_csr = sample_spec(req, decode_model_input(req.prompt, "prompt"), base)
    last_n = req.prompt_logprobs_last_n

    def build() -> None:
        source_base, source_weights = base, weights_dir
        if req.sampling_session_id:
            # Resolved while it was live (no weights known), or released since: read its source.
            try:
                source_base, source_weights = _stored_source(state, owner, sampler_id)
            except APIStatusError as exc:
                raise gone(f"released while this sample was queued: {exc}") from None
        state.host.engine.create_sampler(sampler_id, source_base.name, weights_dir=source_weights)
        with state.lock:
            state.samplers[sampler_id] = LiveSampler(sampler_id, owner, source_base)

    def run() -> SampleResult:
        engine = state.host.engine
        with state.lock:
            missing = sampler_id not in state.samplers
        if missing:
            build()
        try:
            result = engine.sample(sampler_id, spec)
        except EngineNotFoundError:
            # Released with its session after the check above (the engine drops it later):
            # rebuild it, as a sample arriving now would.
            with state.lock:
                state.samplers.pop(sampler_id, None)
            build()
            result = engine.sample(sampler_id, spec)
        result.target_prompt_csr = target_csr
        return _apply_last_n(result, last_n) if last_n else result

    # The target an official 0.38 client's retrieve_futures poller asks about.
    clone = (req.seq_id or 0) // SAMPLE_SEQ_ID_STRIDE
    log_key = (req.sampling_session_id, clone) if req.sampling_session_id else None

    async def produce() -> JSON:
        response = submit(
            state,
            tenant_id=owner,
            lane=None,
            kind=ResultKind.SAMPLE,
            run=run,
            raw=raw,
            latency=state.settings.sample_latency_ms / 1000,
            log_key=log_key,
        )
        request_id = response["request_id"]
        response["sample_sequence_ids"] = [f"{request_id}:{i}" for i in range(spec.num_samples)]
        return response

    return await idempotent(request, raw, produce)


def release_session_samplers(state: ServerState, session_id: str) -> None:
    """Drop the samplers of a finished session from the engine."""
    prefix = f"{session_id}:sample:"
    with state.lock:
        dropped = [s for s in state.samplers if s.startswith(prefix)]
        for sampler_id in dropped:
            del state.samplers[sampler_id]
    # Polls of the session's completions are released (and answer 410 from now on).
    state.pending.logs.close_prefix(prefix)
    for sampler_id in dropped:

        def drop(sampler_id: str = sampler_id) -> JSON:
            state.host.engine.drop_sampler(sampler_id)
            return {}

        submit(state, tenant_id="", lane=None, kind=ResultKind.JSON, run=drop, raw=b"")
