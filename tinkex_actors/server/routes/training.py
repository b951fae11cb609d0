"""Training endpoints: forward_backward, forward, optim_step (protocol §3.4).

forward_backward takes a protobuf body (0.25+, optionally zstd) or the legacy JSON body; the
legacy ``/api/v1/forward`` takes JSON. Input is validated against the model's base model
before anything is queued, so bad input is a 400 and never a half-run request.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request, Response

from tinkex_actors._constants import CONTENT_PROTOBUF
from tinkex_actors.server.codec_json import decode_forward_backward_json
from tinkex_actors.server.codec_proto import decode_forward_backward
from tinkex_actors.server.engine_api import ForwardBackwardResult
from tinkex_actors.server.http_errors import bad_request
from tinkex_actors.server.payloads import FwdBwdPayload
from tinkex_actors.server.pending import ResultKind
from tinkex_actors.server.routes._common import (
    JSON,
    SERVER_ONLY,
    body,
    parse,
    server,
    submit_once,
    tenant,
)
from tinkex_actors.server.schemas import OptimStepBody
from tinkex_actors.server.validation import optim_params, validate_forward_backward

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")


def _json(raw: bytes) -> object:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"malformed JSON body: {exc}") from None


async def _submit_forward(request: Request, raw: bytes, payload: FwdBwdPayload) -> Response:
    state, owner = server(request), tenant(request)
    model = state.live_model(owner, payload.model_id)
    validate_forward_backward(payload, model.base)

    def run() -> ForwardBackwardResult:
        return state.host.engine.forward_backward(
            payload.model_id,
            payload.data,
            payload.loss_fn,
            payload.loss_fn_config,
            forward_only=payload.forward_only,
        )

    return await submit_once(
        request,
        raw,
        lane=payload.model_id,
        kind=ResultKind.FORWARD_BACKWARD,
        run=run,
        seq_id=payload.seq_id,
        latency=state.settings.train_latency_ms / 1000,
    )


@router.post("/forward_backward")
async def forward_backward(request: Request) -> Response:
    """Queue a forward+backward pass (or forward-only, per the body's ``forward_only``)."""
    raw = await body(request)
    if CONTENT_PROTOBUF in request.headers.get("content-type", ""):
        payload = decode_forward_backward(raw)
        if not payload.model_id:
            raise bad_request("model_id: required")
    else:
        payload = decode_forward_backward_json(_json(raw), forward_only=False)
    return await _submit_forward(request, raw, payload)


@router.post("/forward", tags=SERVER_ONLY)
async def forward(request: Request) -> Response:
    """Legacy (pre-0.25) JSON forward-only pass."""
    raw = await body(request)
    if CONTENT_PROTOBUF in request.headers.get("content-type", ""):
        payload = decode_forward_backward(raw)
        payload.forward_only = True
    else:
        payload = decode_forward_backward_json(_json(raw), forward_only=True)
        payload.forward_only = True
    return await _submit_forward(request, raw, payload)


@router.post("/optim_step")
async def optim_step(request: Request) -> Response:
    """Queue an optimizer step (``adam_params`` for AdamW models, ``optimizer_params`` for
    Dimuon ones; the other family is a 400); the result is ``{"metrics": {...}}``."""
    raw = await body(request)
    req = parse(raw, OptimStepBody)
    state, owner = server(request), tenant(request)
    model = state.live_model(owner, req.model_id)
    params = optim_params(req.adam_params, req.optimizer_params, model.optimizer)

    def run() -> JSON:
        metrics = state.host.engine.optim_step(req.model_id, params)
        return {"metrics": {k: float(v) for k, v in metrics.items()}, "type": "optim_step"}

    return await submit_once(
        request,
        raw,
        lane=req.model_id,
        kind=ResultKind.JSON,
        run=run,
        seq_id=req.seq_id,
        latency=state.settings.train_latency_ms / 1000,
    )
