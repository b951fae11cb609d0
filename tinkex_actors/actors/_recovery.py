"""The recovery actor: one per ServiceClient, supervised by its ServiceActor.

It replaces what the server lost, following the ServiceClient's
:class:`~tinkex_actors.recovery.RecoveryPolicy`. Triggers arrive from any thread as calls
(see :mod:`~tinkex_actors.actors._lost`); the actor handles them one at a time, so
concurrent triggers recover once: a trigger naming a session, model or sampling session that
was already replaced is dropped.

* **Session gone** (the heartbeat or a creation got 410 / "unknown session"): create a new
  session, point the heartbeat at it, fence every training client (their models went with
  the session) and re-create every sampling session in the new session; then the queued
  restores run.
* **Model lost** (the client is already fenced): check the session (a heartbeat); if it is
  gone, recover it first. Then create the model again from the newest state that exists: the
  client's last ``save_state``, else the checkpoint it was created from, else its creation
  request; install it in the client (its actor, in mailbox order) and complete the restore
  ticket that :meth:`TrainingClient.resume` waits on.
* **Sampler missing** (an ``asample`` met an unknown sampling session): check the session
  the same way; re-create the sampling session (same base model or weights path) and send
  the parked samples again, or fail them with SamplerLostError when it cannot be rebuilt.

Every step is a log line on ``tinkex_actors.recovery`` and a telemetry event with the same
metadata (session id, model or sampler id, what happened). Each network step is tried up to
``max_attempts`` times with back-off; all waits are cut short by ``close()``. The actor only
``tell``s other actors and never waits on one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar

import orjson

from tinkex_actors import _constants as c
from tinkex_actors import _endpoints as ep
from tinkex_actors import telemetry
from tinkex_actors._logging import get_logger
from tinkex_actors.actors._base import ActorHandle, Call, ChildActor
from tinkex_actors.actors._client_state import ClientState
from tinkex_actors.actors._lost import ModelLost, SamplerMissing, SessionGone, emit, model_lost
from tinkex_actors.actors._registry import samplers
from tinkex_actors.actors._restore import restore
from tinkex_actors.actors._runtime import Runtime
from tinkex_actors.actors._sample_flow import fail_all, poll_singly, send_again
from tinkex_actors.actors._sampler_state import SamplerState
from tinkex_actors.actors._sampling import create_sampling_session
from tinkex_actors.actors._session import Heartbeat, open_session, session_gone_answer
from tinkex_actors.actors._training import TrainingState
from tinkex_actors.errors import (
    APIStatusError,
    ClientClosedError,
    GoneError,
    NotFoundError,
    RequestErrorCategory,
    RequestFailedError,
    SamplerLostError,
    SessionLostError,
    TinkexError,
)
from tinkex_actors.futures import ActorFuture
from tinkex_actors.recovery import RecoveryPolicy
from tinkex_actors.types import CreateSamplingSessionRequest, CreateSamplingSessionResponse
from tinkex_actors.wire import decode_json

__all__ = ["RecoveryActor", "RecoveryState"]

T = TypeVar("T")

_HEARTBEAT_PATH: Final = ep.SESSION_HEARTBEAT.path()


class RecoveryState(ClientState):
    """The recovery actor's context (kept outside the actor, so a restart keeps it).

    Attributes:
        policy: the ServiceClient's recovery policy.
        heartbeat: the session's heartbeat (re-pointed at a new session), once started.
    """

    def __init__(self, runtime: Runtime, handle: ActorHandle, policy: RecoveryPolicy) -> None:
        super().__init__(runtime, handle)
        self.policy = policy
        self.heartbeat: Heartbeat | None = None
        self._replaced = threading.Condition(threading.Lock())

    def notify(self, message: SessionGone | ModelLost | SamplerMissing) -> bool:
        """Hand ``message`` to the recovery actor; False when it cannot take it (closing).
        Never blocks, never raises."""
        if self.is_closed():
            return False
        handler = _HANDLERS[type(message)]
        try:
            self.handle.send(Call(handler, (message,), ActorFuture()))
        except TinkexError:
            return False
        return True

    def session_gone(self, session_id: str, answer: APIStatusError) -> None:
        """The heartbeat's callback: the server says ``session_id`` is gone."""
        self.notify(SessionGone(session_id, answer.body or str(answer)))

    def session_settled(self) -> None:
        """The session was replaced or given up: wake :meth:`await_new_session`."""
        with self._replaced:
            self._replaced.notify_all()

    def await_new_session(self, session_id: str, timeout: float) -> bool:
        """Wait until ``session_id`` is no longer the current session; True when it was
        replaced within ``timeout`` seconds (False: still current, given up, or closed)."""
        runtime = self.runtime
        deadline = time.monotonic() + timeout
        with self._replaced:
            while runtime.session_id == session_id:
                left = deadline - time.monotonic()
                if runtime.session_lost is not None or self.is_closed() or left <= 0:
                    return False
                self._replaced.wait(left)
        return True

    def close(self) -> None:
        """Mark closed: cut the recovery's exchanges and waits short."""
        self.mark_closed()
        self.session_settled()


def _final(exc: TinkexError) -> bool:
    # Errors that trying again cannot change.
    if isinstance(exc, ClientClosedError):
        return True
    if isinstance(exc, RequestFailedError):
        return exc.category == RequestErrorCategory.USER
    if isinstance(exc, APIStatusError):
        return exc.status_code < c.RETRYABLE_STATUS_FLOOR and exc.status_code not in (408, 429)
    return False


class RecoveryActor(ChildActor):
    """Runs the recoveries of one ServiceClient, one at a time."""

    def __init__(
        self,
        state: RecoveryState,
        handle: ActorHandle,
        supervisor: Any | None = None,
    ) -> None:
        super().__init__(handle, supervisor)
        self.state = state

    # ------------------------------------------------------------------ helpers
    #: Whether an error is one that trying again cannot change.
    final = staticmethod(_final)

    @property
    def _runtime(self) -> Runtime:
        return self.state.runtime

    @property
    def _policy(self) -> RecoveryPolicy:
        return self.state.policy

    def attempt(
        self, what: str, fn: Callable[[], T], **meta: Any
    ) -> tuple[T | None, int, TinkexError | None]:
        """Run ``fn`` up to ``max_attempts`` times; returns (result, attempts, last error)."""
        policy = self._policy
        error: TinkexError | None = None
        for attempt in range(1, policy.max_attempts + 1):
            if self.state.is_closed():
                return None, attempt, ClientClosedError("the ServiceClient was closed")
            try:
                with self.state.blocking():
                    return fn(), attempt, None
            except TinkexError as exc:
                error = exc
                if self.state.is_closed():
                    return None, attempt, ClientClosedError("the ServiceClient was closed")
                if _final(exc) or attempt == policy.max_attempts:
                    return None, attempt, exc
                delay = policy.delay(attempt)
                get_logger("recovery").warning(
                    "tinkex.recovery.retry",
                    step=what,
                    attempt=attempt,
                    delay_s=delay,
                    error=type(exc).__name__,
                    reason=str(exc)[:200],
                    **meta,
                )
                if self.state.wait(delay):
                    return None, attempt, ClientClosedError("the ServiceClient was closed")
        return None, policy.max_attempts, error

    def probe_session(self) -> bool | None:
        """One heartbeat: True alive, False gone, None unknown (unreachable, odd answer)."""
        runtime = self._runtime
        session_id = runtime.session_id
        body = orjson.dumps({"session_id": session_id, "type": "session_heartbeat"})
        try:
            with self.state.blocking():
                runtime.transport.request(
                    "POST", _HEARTBEAT_PATH, body=body, timeout=c.HEARTBEAT_TIMEOUT
                )
        except (GoneError, NotFoundError) as exc:
            return False if session_gone_answer(exc, session_id) else None
        except TinkexError:
            return None
        return True

    def _children(self) -> list[Any]:
        # dict.copy() is one step under the GIL: the ServiceActor may add children meanwhile.
        return list(self._runtime.children.copy().values())

    # ------------------------------------------------------------------ sessions
    def on_session_gone(self, message: SessionGone, future: ActorFuture[None]) -> None:
        """The server said the session is gone: replace it (or give up on it)."""
        future.set_result(None)
        try:
            self.recover_session(message.session_id, message.reason)
        except Exception:
            # A bug: let the heartbeat beat (and report) again, then crash (and restart).
            if self.state.heartbeat is not None and self._runtime.session_lost is None:
                self.state.heartbeat.rebind(self._runtime.session_id)
            raise

    def recover_session(self, session_id: str, reason: str) -> bool:
        """Replace ``session_id`` if it is still the current one; True when a live session
        exists afterwards."""
        runtime = self._runtime
        if runtime.session_lost is not None:
            return False
        if session_id != runtime.session_id or self.state.is_closed():
            return True  # replaced already (a repeated trigger)
        emit(
            runtime,
            telemetry.RECOVERY_SESSION_LOST,
            "tinkex.recovery.session_lost",
            "warning",
            reason=reason[:300],
        )
        if not self._policy.sessions:
            self._give_up_session(session_id, reason, "session recovery is off")
            return False
        started = time.monotonic()
        new_id, attempts, error = self.attempt(
            "create_session",
            lambda: open_session(runtime.transport, runtime.config),
            session_id=session_id,
        )
        if new_id is None:
            self._give_up_session(session_id, reason, f"creating a new one failed: {error}")
            return False
        runtime.session_id = new_id
        self.state.session_settled()
        if self.state.heartbeat is not None:
            self.state.heartbeat.rebind(new_id)
        emit(
            runtime,
            telemetry.RECOVERY_SESSION_RECOVERED,
            "tinkex.recovery.session_recovered",
            "warning",
            previous_session_id=session_id,
            attempts=attempts,
            duration_s=round(time.monotonic() - started, 3),
        )
        why = f"its session {session_id} is gone"
        children = self._children()
        for child in children:
            # Clients still being created are not touched: their creation goes to the new
            # session (or fails and meets the loss later).
            if (
                isinstance(child, TrainingState)
                and child.info is not None
                and not child.is_closed()
            ):
                model_lost(child, child.model_id, why, "session")  # queues its restore
        for child in children:
            if isinstance(child, SamplerState):
                self._rebind_sampler(child, why)
        return True

    def _give_up_session(self, session_id: str, reason: str, why: str) -> None:
        runtime = self._runtime
        runtime.session_lost = SessionLostError(
            f"the session {session_id} is gone from the server ({reason[:200]}) and was not "
            f"replaced ({why}): close this ServiceClient and create a new one",
            session_id=session_id,
            reason=reason,
        )
        self.state.session_settled()
        if self.state.heartbeat is not None:
            self.state.heartbeat.stop()
        emit(
            runtime,
            telemetry.RECOVERY_SESSION_FAILED,
            "tinkex.recovery.session_failed",
            "error",
            reason=why[:300],
        )
        for child in self._children():
            if (
                isinstance(child, TrainingState)
                and child.info is not None
                and not child.is_closed()
            ):
                model_lost(child, child.model_id, f"its session {session_id} is gone", "session")
            elif isinstance(child, SamplerState) and child.parked:
                self._sampler_failed(child, f"its session {session_id} is gone ({why})")

    # ------------------------------------------------------------------ models
    def on_model_lost(self, message: ModelLost, future: ActorFuture[None]) -> None:
        """Restore a fenced training client (or give up on it): see :mod:`._restore`."""
        future.set_result(None)
        restore(self, message)

    # ------------------------------------------------------------------ samplers
    def on_sampler_missing(self, message: SamplerMissing, future: ActorFuture[None]) -> None:
        """A sample met an unknown sampling session: re-create it (or give up on it)."""
        state = message.state
        future.set_result(None)
        if state.sampler_id != message.sampler_id:
            return  # re-created already; its parked samples were sent again then
        if state.is_closed():
            fail_all(state.mark_lost(_sampler_closed(state)), _sampler_closed(state))
            return
        if self.probe_session() is False:
            self.recover_session(self._runtime.session_id, message.reason)
            if state.sampler_id != message.sampler_id or state.lost is not None:
                return  # handled with the session
        self._rebind_sampler(state, message.reason)

    def _rebind_sampler(self, state: SamplerState, why: str) -> None:
        runtime = self._runtime
        old = state.sampler_id
        if state.lost is not None:
            return
        if state.is_closed() or runtime.children.get(state.handle.id) is not state:
            # Closed or released (its facade was dropped): nobody samples from it any more.
            fail_all(state.mark_lost(_sampler_closed(state)), _sampler_closed(state))
            return
        snapshot = samplers.get(state.key)
        if snapshot is None:
            return  # still being created: its creation goes to the new session
        base, path = snapshot.base_model, snapshot.model_path
        if not state.recreatable or (base is None and path is None):
            self._sampler_failed(
                state,
                f"{why}; it held a snapshot of a live adapter, which cannot be rebuilt: save the "
                "weights with a name and sample from that path",
            )
            return

        def create() -> str:
            request = CreateSamplingSessionRequest(
                session_id=runtime.session_id,
                sampling_session_seq_id=runtime.next_sampling_session_seq_id(),
                base_model=None if path else base,
                model_path=path,
            )
            response = create_sampling_session(runtime, request, wait=False)
            return decode_json(CreateSamplingSessionResponse, response.content).sampling_session_id

        new_id, attempts, error = self.attempt("create_sampling_session", create, sampler_id=old)
        if new_id is None:
            self._sampler_failed(state, f"{why}; creating it again failed: {error}")
            return
        parked, watched = state.rebind(new_id, base, path)
        poll_singly(watched)
        for sub in parked:
            send_again(sub)
        emit(
            runtime,
            telemetry.RECOVERY_SAMPLER_REBOUND,
            "tinkex.recovery.sampler_rebound",
            "warning",
            sampler_id=new_id,
            previous_sampler_id=old,
            resubmitted=len(parked),
            attempts=attempts,
        )

    def _sampler_failed(self, state: SamplerState, why: str) -> None:
        error = SamplerLostError(
            f"the sampling session {state.sampler_id} is gone ({why[:500]}): create a new "
            "sampling client",
            sampler_id=state.sampler_id,
            reason=why,
        )
        fail_all(state.mark_lost(error), state.lost or error)
        emit(
            self._runtime,
            telemetry.RECOVERY_SAMPLER_FAILED,
            "tinkex.recovery.sampler_failed",
            "error",
            sampler_id=state.sampler_id,
            reason=why[:300],
        )


def _sampler_closed(state: SamplerState) -> SamplerLostError:
    return SamplerLostError(
        f"the sampling client {state.sampler_id} was closed", sampler_id=state.sampler_id
    )


_HANDLERS: Final[dict[type, Callable[..., None]]] = {
    SessionGone: RecoveryActor.on_session_gone,
    ModelLost: RecoveryActor.on_model_lost,
    SamplerMissing: RecoveryActor.on_sampler_missing,
}
