"""Lost server state as the clients meet it: the triggers of recovery and the model fence.

Whoever learns that the server lost something tells the tree's recovery actor
(:mod:`~tinkex_actors.actors._recovery`) with one of the messages below, from whatever
thread it runs on (the heartbeat, a training actor, a result lane, a sampling lane). Telling
never blocks and never raises; the recovery actor handles the messages one at a time and
drops the ones a previous recovery already answered, so concurrent triggers recover once.

A training client whose model is lost is *fenced* at once, in the thread that noticed:
:func:`model_lost` fails its pending calls with :class:`ModelLostError` and every call that
reaches its actor afterwards fails the same way, until :meth:`TrainingClient.resume` lifts
the fence (after a restore) in mailbox order. So no call meant for the lost model ever runs
on the restored one unless the user said so.
"""

from __future__ import annotations

import re
import threading
import time
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs

from tinkex_actors import _constants as c
from tinkex_actors import _endpoints as ep
from tinkex_actors import telemetry
from tinkex_actors._logging import get_logger
from tinkex_actors.actors._session import session_gone_answer
from tinkex_actors.errors import (
    APIStatusError,
    GoneError,
    ModelLostError,
    NotFoundError,
    SessionLostError,
    TinkexError,
)
from tinkex_actors.recovery import Restored
from tinkex_actors.transport import Response
from tinkex_actors.wire import encode_json

if TYPE_CHECKING:
    from tinkex_actors.actors._runtime import Runtime
    from tinkex_actors.actors._sampler_state import SamplerState
    from tinkex_actors.actors._training import TrainingState

__all__ = [
    "MUTATING",
    "ModelGuard",
    "ModelLost",
    "RestoreTicket",
    "SamplerMissing",
    "SessionGone",
    "create_in_session",
    "emit",
    "model_gone",
    "model_lost",
    "names_model",
    "notify",
    "result_lost",
]

#: Why a model counts as lost: the server said so (``lost``), its session went with it
#: (``session``), or a result that changes it was lost so its state is unknown (``unknown``).
LossKind = Literal["lost", "session", "unknown"]
#: Calls whose lost result leaves the model's state unknown.
MUTATING: Final = frozenset(
    e.request_type for e in (ep.FORWARD_BACKWARD, ep.OPTIM_STEP, ep.LOAD_WEIGHTS)
)


class SessionGone:
    """The server said session ``session_id`` is gone."""

    __slots__ = ("reason", "session_id")

    def __init__(self, session_id: str, reason: str) -> None:
        self.session_id = session_id
        self.reason = reason


class ModelLost:
    """Restore ``state``'s model ``model_id`` (already fenced by :func:`model_lost`)."""

    __slots__ = ("kind", "model_id", "reason", "state")

    def __init__(self, state: TrainingState, model_id: str, reason: str, kind: LossKind) -> None:
        self.state = state
        self.model_id = model_id
        self.reason = reason
        self.kind = kind


class SamplerMissing:
    """A sample sent to sampling session ``sampler_id`` was answered "unknown" or "gone"."""

    __slots__ = ("reason", "sampler_id", "state")

    def __init__(self, state: SamplerState, sampler_id: str, reason: str) -> None:
        self.state = state
        self.sampler_id = sampler_id
        self.reason = reason


def notify(runtime: Runtime, message: Any) -> bool:
    """Tell the tree's recovery actor; False when there is none (closed, or a bare runtime)."""
    recovery = runtime.recovery
    return recovery is not None and recovery.notify(message)


def emit(runtime: Runtime, event: telemetry.Event, log_event: str, level: str, **meta: Any) -> None:
    """One recovery step: a structured log line and the telemetry event, same metadata."""
    meta.setdefault("session_id", runtime.session_id)
    meta["tenant_id"] = runtime.config.tenant_id
    getattr(get_logger("recovery"), level)(log_event, **meta)
    telemetry.execute(event, {"monotonic_time": time.monotonic_ns()}, meta)


class RestoreTicket:
    """One restore of a training client, which :meth:`TrainingClient.resume` waits for.

    Completed once: with ``restored`` (the model is back; the fence stays until resume) or
    with ``error`` (the client is dead).
    """

    __slots__ = ("done", "error", "previous_model_id", "restored")

    def __init__(self, previous_model_id: str) -> None:
        self.previous_model_id = previous_model_id
        self.done = threading.Event()
        self.restored: Restored | None = None
        self.error: ModelLostError | None = None

    def succeed(self, restored: Restored) -> None:
        """The model was restored."""
        self.restored = restored
        self.done.set()

    def fail(self, error: ModelLostError) -> None:
        """The model cannot be restored."""
        if not self.done.is_set():
            self.error = error
            self.done.set()


class ModelGuard:
    """A training client's recovery bookkeeping (``TrainingState.guard``).

    Attributes:
        origin: the request that created the model (a ``CreateModelRequest``, or the
            create-via-load ``LoadWeightsRequest``); a restore may send it again in a new
            session.
        checkpoint: the last ``save_state`` path whose result arrived (or the ``load`` origin's
            path), what a restore starts from.
        checkpoint_steps: ``optim_steps`` when that checkpoint's result arrived: the
            optimizer steps it holds.
        checkpoint_optimizer: whether the checkpoint carries optimizer state the client used.
        optim_steps: optimizer steps of this model whose results arrived (the result lane),
            plus those of the checkpoint it was restored from.
        fence: the error every call fails with while set.
        ticket: the restore under way or waiting for ``resume()``.
        unloaded: the client unloaded its model (a 404 then is no loss).
        restores: how many times the model was replaced.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.origin: Any = None
        self.checkpoint: str | None = None
        self.checkpoint_steps = 0
        self.checkpoint_optimizer = True
        self._checkpoint_order = -1
        self._orders = 0
        self.optim_steps = 0
        self.fence: ModelLostError | None = None
        self.ticket: RestoreTicket | None = None
        self.unloaded = False
        self.restores = 0

    def check(self) -> None:
        """Raise the fence's error if the model is fenced."""
        fence = self.fence
        if fence is not None:
            raise fence

    def set_origin(self, request: Any) -> None:
        """Record the request creating the model (a create-via-load's path is also its first
        checkpoint)."""
        self.origin = request
        path = getattr(request, "path", None)
        if path is not None:
            self.checkpoint, self.checkpoint_optimizer = path, bool(request.optimizer)

    def optim_done(self, done: Any) -> None:
        """An optim_step's future completed: count it when it succeeded."""
        if done.exception() is None:
            with self.lock:
                self.optim_steps += 1

    def next_order(self) -> int:
        """The order of a save being submitted (actor thread), to keep the newest result."""
        self._orders += 1
        return self._orders

    def saved(self, order: int, path: str, steps: int) -> None:
        """A ``save_state`` result arrived: the newest checkpoint wins (results may complete
        out of order on different threads)."""
        with self.lock:
            if order > self._checkpoint_order:
                self._checkpoint_order = order
                self.checkpoint, self.checkpoint_steps = path, steps
                self.checkpoint_optimizer = True

    def reset_checkpoint_order(self) -> None:
        """After a restore: saves submitted to the lost model must not override the
        checkpoint the restore started from."""
        with self.lock:
            self._checkpoint_order = self._orders


def names_model(exc: APIStatusError, model_id: str) -> bool:
    """Whether a 404 body is about the model ``model_id`` itself ("unknown model 'x'",
    "model 'x' is not loaded"), not, say, a checkpoint under its run id."""
    return bool(model_id) and re.search(r"model ['\"]?" + re.escape(model_id), exc.body) is not None


def model_gone(state: TrainingState, exc: APIStatusError) -> bool:
    """Whether the answer to a call naming ``state``'s model says the model is gone: a 410,
    or a 404 saying it is unknown or not loaded (unless this client unloaded it)."""
    if isinstance(exc, GoneError):
        return True
    return (
        isinstance(exc, NotFoundError)
        and not state.guard.unloaded
        and names_model(exc, state.model_id)
    )


def result_lost(
    state: TrainingState, model_id: str, request_type: str, exc: APIStatusError
) -> TinkexError:
    """A poll of ``model_id``'s request answered 410 (futures are lost in a restart) or 404
    (a server that lost its data). When the call changes the model and models are restored,
    the model's state is unknown: fence it and return the fence's error; else ``exc``."""
    recovery = state.runtime.recovery
    if (
        request_type in MUTATING
        and recovery is not None
        and recovery.policy.restore_models
        and model_id == state.model_id
    ):
        reason = f"the result of a {request_type} was lost (HTTP {exc.status_code})"
        return model_lost(state, model_id, reason, "unknown")
    return exc


def create_in_session(
    runtime: Runtime, path: str, request: Any, *, wait: bool = True
) -> tuple[Response, Any]:
    """POST a creation naming ``request.session_id`` (create_model, create-via-load,
    create_sampling_session); returns the answer and the request as sent.

    An answer saying the session is gone asks for session recovery; with ``wait`` (and
    session recovery on) the creation then waits, at most ``SESSION_REPLACE_WAIT`` seconds,
    for the new session and is sent once more in it. Otherwise the answer is raised.
    Never ``wait`` in the recovery actor's own thread.

    Raises:
        APIError: the creation failed.
        SessionLostError: the session is gone and was not (or will not be) replaced.
    """
    session_id = request.session_id
    try:
        return runtime.transport.request("POST", path, body=encode_json(request)), request
    except (GoneError, NotFoundError) as exc:
        if not session_gone_answer(exc, session_id):
            raise
        reason = exc.body or str(exc)
        notify(runtime, SessionGone(session_id, reason))
        recovery = runtime.recovery
        if recovery is None or not recovery.policy.sessions:
            raise SessionLostError(
                f"the session {session_id} is gone from the server ({reason[:200]}) and session "
                "recovery is off: close this ServiceClient and create a new one",
                session_id=session_id,
                reason=reason,
            ) from None
        if not wait:
            raise
        if not recovery.await_new_session(session_id, c.SESSION_REPLACE_WAIT):
            if runtime.session_lost is not None:
                raise runtime.session_lost from None
            raise
    request = attrs.evolve(request, session_id=runtime.session_id)
    return runtime.transport.request("POST", path, body=encode_json(request)), request


def _loss_message(model_id: str, reason: str, guard: ModelGuard, restoring: bool) -> str:
    where = (
        f"its last checkpoint {guard.checkpoint} ({guard.checkpoint_steps} optimizer steps in)"
        if guard.checkpoint
        else "its creation (it has no checkpoint)"
    )
    head = f"the model {model_id} was lost ({reason}); what was trained since {where} is gone"
    if restoring:
        return (
            f"{head}. It is being restored from there as a new model: call "
            "TrainingClient.resume() to wait for it and continue from that step (calls fail "
            "with this error until then)"
        )
    if guard.checkpoint:
        hint = f"create_training_client_from_state_with_optimizer({guard.checkpoint!r})"
    else:
        hint = "a new training client"
    return (
        f"{head}; this client is dead: continue with {hint}, or let the SDK do it by passing "
        "recovery=RecoveryPolicy() to the ServiceClient"
    )


def model_lost(state: TrainingState, model_id: str, reason: str, kind: LossKind) -> ModelLostError:
    """Fence ``state`` because its model ``model_id`` is lost, once; returns the error calls
    fail with. Fails the client's pending calls and asks for a restore when the policy says
    so. Any thread; never blocks (no I/O)."""
    guard = state.guard
    runtime = state.runtime
    recovery = runtime.recovery
    restoring = recovery is not None and recovery.policy.restore_models
    with guard.lock:
        fence = guard.fence
        if fence is not None and fence.model_id == model_id:
            return fence  # already fenced for this loss
        if model_id != state.model_id:
            # A late report about a model already replaced: nothing to fence.
            return fence or ModelLostError(
                f"the model {model_id} was lost; this client continues with {state.model_id}",
                model_id=model_id,
                checkpoint=guard.checkpoint,
                reason=reason,
            )
        error = ModelLostError(
            _loss_message(model_id, reason, guard, restoring),
            model_id=model_id,
            checkpoint=guard.checkpoint,
            optim_steps=guard.checkpoint_steps if guard.checkpoint else 0,
            restoring=restoring,
            reason=reason,
        )
        guard.fence = error
        ticket = guard.ticket = RestoreTicket(model_id)
    if not restoring:
        ticket.fail(error)
    state.fail_pending(error)
    emit(
        runtime,
        telemetry.RECOVERY_MODEL_LOST,
        "tinkex.recovery.model_lost",
        "warning",
        model_id=model_id,
        kind=kind,
        reason=reason[:300],
        checkpoint=guard.checkpoint,
        restoring=restoring,
    )
    if restoring and not notify(runtime, ModelLost(state, model_id, reason, kind)):
        ticket.fail(error)
    return error
