"""Restoring a training client whose model was lost (the recovery actor's model half).

:func:`restore` runs in the recovery actor's thread for one fenced client (see
:mod:`~tinkex_actors.actors._lost`): it checks the session (recovering it first when it is
gone), then creates the model again in the current session from the newest state that
exists: the client's last ``save_state`` (with the optimizer state unless the policy says
otherwise), else the checkpoint the client was created from, else the client's creation
request. A source the server refuses (a checkpoint that is gone) moves on to the next; a
server that cannot be reached stops the restore. The new model is installed by the client's
own actor (:func:`install_restored`, a call in its mailbox, so it is ordered with its other
calls), which completes the restore ticket. :func:`resume` (``TrainingClient.resume``) waits
for the ticket and lifts the fence, again through the mailbox.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Final

import attrs

from tinkex_actors import _endpoints as ep
from tinkex_actors import telemetry
from tinkex_actors._endpoints import QueuedEndpoint
from tinkex_actors.actors._base import Call
from tinkex_actors.actors._lost import ModelLost, RestoreTicket, emit
from tinkex_actors.actors._poller import poll_future, untyped_future
from tinkex_actors.actors._session import session_gone_answer
from tinkex_actors.actors._training import TrainingState, fetch_info
from tinkex_actors.errors import (
    ClientClosedError,
    GoneError,
    ModelLostError,
    NotFoundError,
    TinkexError,
    TinkexTimeoutError,
)
from tinkex_actors.futures import ActorFuture
from tinkex_actors.recovery import Restored
from tinkex_actors.types import (
    CreateModelRequest,
    CreateModelResponse,
    GetInfoResponse,
    LoadWeightsRequest,
    LoadWeightsResponse,
)
from tinkex_actors.wire import encode_json

if TYPE_CHECKING:
    from tinkex_actors.actors._recovery import RecoveryActor
    from tinkex_actors.actors._training import TrainingActor

__all__ = ["install_restored", "lift_fence", "restore", "resume"]

#: How often resume() looks whether the client was closed while it waits.
_CLOSED_CHECK: Final = 0.5


@attrs.frozen
class _Source:
    """A state a lost model can be rebuilt from."""

    request: CreateModelRequest | LoadWeightsRequest
    checkpoint: str | None
    optim_steps: int
    optimizer: bool


def restore(actor: RecoveryActor, message: ModelLost) -> None:
    """Restore ``message.state``'s model, or give up on it (the ticket says which)."""
    state = message.state
    ticket = state.guard.ticket
    if ticket is None or ticket.previous_model_id != message.model_id or ticket.done.is_set():
        return  # superseded or already answered
    try:
        _restore(actor, state, ticket, message)
    except Exception as exc:  # a bug must not leave resume() waiting
        model_failed(actor, state, ticket, f"the restore crashed: {type(exc).__name__}: {exc}")
        raise


def _restore(
    actor: RecoveryActor, state: TrainingState, ticket: RestoreTicket, message: ModelLost
) -> None:
    runtime = state.runtime
    if state.is_closed():
        ticket.fail(
            ModelLostError(
                f"the training client of model {ticket.previous_model_id} was closed",
                model_id=ticket.previous_model_id,
                checkpoint=state.guard.checkpoint,
            )
        )
        return
    if message.kind != "session" and actor.probe_session() is False:
        actor.recover_session(runtime.session_id, f"the model {message.model_id} was lost")
    if runtime.session_lost is not None:
        model_failed(actor, state, ticket, str(runtime.session_lost))
        return
    started = time.monotonic()
    failures: list[str] = []
    attempts = 0
    for source in _sources(actor, state):
        created, tries, error = actor.attempt(
            "restore_model",
            functools.partial(_create, actor, state, source),
            model_id=ticket.previous_model_id,
        )
        attempts += tries
        if created is not None:
            _install(actor, state, ticket, source, created, attempts, started)
            return
        assert error is not None
        failures.append(f"{source.checkpoint or 'its creation'}: {error}")
        if isinstance(error, ClientClosedError) or not actor.final(error):
            break  # the server is unreachable, not the source unusable: stop here
    why = "restoring failed: " + "; ".join(failures) if failures else "nothing to restore from"
    model_failed(actor, state, ticket, why)


def _sources(actor: RecoveryActor, state: TrainingState) -> list[_Source]:
    guard = state.guard
    origin = guard.origin
    sources: list[_Source] = []
    if guard.checkpoint is not None:
        optimizer = actor.state.policy.optimizer and guard.checkpoint_optimizer
        request = LoadWeightsRequest(
            path=guard.checkpoint,
            optimizer=optimizer,
            session_id=state.runtime.session_id,
            model_seq_id=0,  # both replaced when it is sent
            user_metadata=getattr(origin, "user_metadata", None),
        )
        sources.append(_Source(request, guard.checkpoint, guard.checkpoint_steps, optimizer))
    if isinstance(origin, LoadWeightsRequest) and origin.path != guard.checkpoint:
        sources.append(_Source(origin, origin.path, 0, origin.optimizer))
    elif isinstance(origin, CreateModelRequest):
        sources.append(_Source(origin, None, 0, False))
    return sources


def _create(
    actor: RecoveryActor, state: TrainingState, source: _Source, again: bool = True
) -> tuple[str, GetInfoResponse]:
    """Create the model from ``source`` in the current session: (model id, get_info)."""
    runtime = state.runtime
    session_id = runtime.session_id
    request = attrs.evolve(
        source.request, session_id=session_id, model_seq_id=runtime.next_model_seq_id()
    )
    endpoint: QueuedEndpoint[CreateModelResponse] | QueuedEndpoint[LoadWeightsResponse]
    endpoint = ep.CREATE_MODEL if isinstance(request, CreateModelRequest) else ep.LOAD_WEIGHTS
    try:
        response = runtime.transport.request(
            endpoint.method, endpoint.path(), body=encode_json(request)
        )
    except (GoneError, NotFoundError) as exc:
        if (
            again
            and session_gone_answer(exc, session_id)
            and actor.recover_session(session_id, exc.body or str(exc))
            and runtime.session_id != session_id
        ):
            return _create(actor, state, source, again=False)  # once, in the new session
        raise
    submitted = untyped_future(response)
    answer = poll_future(
        runtime,
        submitted.request_id,
        endpoint.response,
        request_type=endpoint.request_type,
        proto=False,
        deadline=time.monotonic() + actor.state.policy.restore_timeout,
        is_closed=lambda: actor.state.is_closed() or state.is_closed(),
    )
    model_id = (
        getattr(answer, "model_id", None)
        or submitted.model_id
        or f"{session_id}:train:{request.model_seq_id}"
    )
    return model_id, fetch_info(runtime, model_id)


def _install(
    actor: RecoveryActor,
    state: TrainingState,
    ticket: RestoreTicket,
    source: _Source,
    created: tuple[str, GetInfoResponse],
    attempts: int,
    started: float,
) -> None:
    model_id, info = created
    restored = Restored(
        model_id=model_id,
        previous_model_id=ticket.previous_model_id,
        checkpoint=source.checkpoint,
        optim_steps=source.optim_steps,
        optimizer=source.optimizer,
    )
    installed: ActorFuture[None] = ActorFuture()
    try:
        state.handle.send(Call(install_restored, (ticket, model_id, info, restored), installed))
    except TinkexError as exc:
        model_failed(actor, state, ticket, f"the client cannot take the restored model: {exc}")
        return
    emit(
        state.runtime,
        telemetry.RECOVERY_MODEL_RESTORED,
        "tinkex.recovery.model_restored",
        "warning",
        model_id=model_id,
        previous_model_id=ticket.previous_model_id,
        checkpoint=source.checkpoint,
        optim_steps=source.optim_steps,
        optimizer=source.optimizer,
        attempts=attempts,
        duration_s=round(time.monotonic() - started, 3),
    )


def model_failed(
    actor: RecoveryActor, state: TrainingState, ticket: RestoreTicket, why: str
) -> None:
    """Give up on ``state``'s model: the client is dead (fenced with a final error)."""
    guard = state.guard
    model_id = ticket.previous_model_id
    checkpoint = guard.checkpoint
    hint = (
        f"create_training_client_from_state_with_optimizer({checkpoint!r})"
        if checkpoint
        else "a new training client"
    )
    error = ModelLostError(
        f"the model {model_id} was lost and could not be restored ({why[:500]}); this "
        f"client is dead: continue with {hint}",
        model_id=model_id,
        checkpoint=checkpoint,
        optim_steps=guard.checkpoint_steps if checkpoint else 0,
        restoring=False,
        reason=why,
    )
    with guard.lock:
        if guard.ticket is ticket:
            guard.fence = error
    ticket.fail(error)
    state.fail_pending(error)
    emit(
        state.runtime,
        telemetry.RECOVERY_MODEL_FAILED,
        "tinkex.recovery.model_failed",
        "error",
        model_id=model_id,
        checkpoint=checkpoint,
        reason=why[:300],
    )


# ---------------------------------------------------------------------------- in the client
def install_restored(
    actor: TrainingActor,
    ticket: RestoreTicket,
    model_id: str,
    info: GetInfoResponse,
    restored: Restored,
    future: ActorFuture[None],
) -> None:
    """A call run by the client's TrainingActor: make the restored model the client's (new
    id, seq_ids from 1). The fence stays until :func:`lift_fence`."""
    state = actor.state
    guard = state.guard
    if guard.ticket is not ticket:
        future.set_result(None)  # superseded by a later loss
        return
    state.set_model(model_id, info)
    state.next_seq = 1
    with guard.lock:
        guard.optim_steps = restored.optim_steps
    guard.restores += 1
    guard.unloaded = False
    guard.reset_checkpoint_order()
    ticket.succeed(restored)
    future.set_result(None)


def lift_fence(actor: TrainingActor, ticket: RestoreTicket, future: ActorFuture[bool]) -> None:
    """A call run by the client's TrainingActor: let calls through again (the user called
    resume(); calls queued before this one were failed by the fence). True when ``ticket``
    was the current restore."""
    guard = actor.state.guard
    with guard.lock:
        current = guard.ticket is ticket and ticket.restored is not None
        if current:
            guard.fence = guard.ticket = None
    future.set_result(current)


def resume(state: TrainingState, timeout: float | None) -> Restored | None:
    """:meth:`TrainingClient.resume`: wait for the client's restore, then lift its fence in
    mailbox order. Caller's thread; every wait bounded by ``timeout`` (None: no bound)."""
    deadline = None if timeout is None else time.monotonic() + timeout

    def left() -> float | None:
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    while True:
        ticket = state.guard.ticket
        if ticket is None:
            return None
        # Waited in slices, so closing the client (or its ServiceClient) ends the wait.
        while not ticket.done.wait(min(_CLOSED_CHECK, left() or _CLOSED_CHECK)):
            if state.is_closed():
                raise ClientClosedError(f"the training client {state.model_id} was closed")
            remaining = left()
            if remaining is not None and remaining <= 0:
                raise TinkexTimeoutError(
                    f"the restore of model {ticket.previous_model_id} did not finish within "
                    f"{timeout} s (it goes on; call resume() again)"
                )
        if ticket.error is not None:
            raise ticket.error
        lifted: ActorFuture[bool] = ActorFuture()
        state.handle.send(Call(lift_fence, (ticket,), lifted))
        if lifted.result(left()):
            return ticket.restored
        # A newer loss replaced this restore: wait for that one.
