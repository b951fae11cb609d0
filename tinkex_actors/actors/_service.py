"""ServiceActor: the root of one ServiceClient's tree and the supervisor of its clients.

It never makes an HTTP call: starting a client means drawing the session counter, building
the client's state (kept outside the actor so restarts keep it), starting its actor and
handing it the creation call. The child does its own HTTP (create_model, polling, get_info,
create_sampling_session), so creating many clients at once never queues behind a round trip.

Supervision is one_for_one: a child that crashes (an unexpected exception in its thread, or
escalated from one of its worker tasks) is restarted on the same state: same server model,
seq_ids continuing. A child crashing more than ``max_restarts`` times within
``restart_period`` seconds is marked failed: its calls then raise ChildFailedError, and the
failure is logged (ERROR ``tinkex.actor.failed``) and reported as the telemetry event
:data:`CHILD_FAILED`. Each restart is logged (WARNING ``tinkex.actor.restarted``) and
reported as :data:`CHILD_RESTARTED`.

The tree's recovery actor (:mod:`~tinkex_actors.actors._recovery`) is a child like the
others, started first and supervised the same way.

Children only ``tell`` the ServiceActor (crash reports, releases); it never blocks on them.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from types import TracebackType
from typing import Any, Final

import pykka

from tinkex_actors import telemetry
from tinkex_actors._logging import get_logger
from tinkex_actors.actors._base import ActorHandle, Call, ChildActor, ChildCrashed
from tinkex_actors.actors._recovery import RecoveryActor, RecoveryState
from tinkex_actors.actors._registry import samplers
from tinkex_actors.actors._runtime import Runtime
from tinkex_actors.actors._sample_flow import fall_back
from tinkex_actors.actors._sampling import SamplerState, SamplingActor
from tinkex_actors.actors._training import TrainingActor, TrainingState
from tinkex_actors.errors import ChildFailedError, ClientClosedError
from tinkex_actors.futures import ActorFuture

__all__ = [
    "CHILD_FAILED",
    "CHILD_RESTARTED",
    "Release",
    "ServiceActor",
    "release_child",
    "send_to_service",
]

#: Telemetry events of supervision (defined with the others in :mod:`tinkex_actors.telemetry`).
CHILD_RESTARTED: Final = telemetry.ACTOR_RESTARTED
CHILD_FAILED: Final = telemetry.ACTOR_FAILED

ChildState = TrainingState | SamplerState | RecoveryState


class Release:
    """Stop a child and forget it (its facade was closed or collected, or creation failed)."""

    __slots__ = ("handle",)

    def __init__(self, handle: ActorHandle) -> None:
        self.handle = handle


class _Record:
    __slots__ = ("actor_class", "handle", "restarts", "state")

    def __init__(self, actor_class: type[ChildActor], state: ChildState) -> None:
        self.actor_class = actor_class
        self.state = state
        self.handle = state.handle
        self.restarts: deque[float] = deque()


def send_to_service(runtime: Runtime, fn: Any, args: tuple[Any, ...]) -> ActorFuture[Any]:
    """Send a Call to the runtime's ServiceActor; returns its future.

    Raises:
        ClientClosedError / ChildFailedError: the ServiceClient is closed or broken.
    """
    runtime.check_open()
    future: ActorFuture[Any] = ActorFuture()
    handle: ActorHandle = runtime.service_handle
    handle.send(Call(fn, args, future))
    return future


def release_child(runtime: Runtime, handle: ActorHandle) -> None:
    """Ask the ServiceActor to stop and forget a child. Never raises, never blocks."""
    ref = runtime.service_handle.ref
    if ref is None:
        return
    # Dead: the tree is closing, and close() stops every child.
    with contextlib.suppress(pykka.ActorDeadError):
        ref.tell(Release(handle))


class ServiceActor(ChildActor):
    """Starts and supervises the clients of one ServiceClient.

    Args:
        runtime: the tree's context.
        handle: the ServiceClient's handle to this actor.
        max_restarts: restarts allowed per child within ``restart_period``.
        restart_period: the intensity window, in seconds.
    """

    def __init__(
        self, runtime: Runtime, handle: ActorHandle, max_restarts: int, restart_period: float
    ) -> None:
        super().__init__(handle, None)
        self.runtime = runtime
        self.max_restarts = max_restarts
        self.restart_period = restart_period
        self._records: dict[int, _Record] = {}

    # ------------------------------------------------------------------ messages
    def on_receive(self, message: Any) -> Any:
        """Calls, crash reports and releases."""
        if isinstance(message, ChildCrashed):
            self._child_crashed(message)
            return None
        if isinstance(message, Release):
            self._release(message.handle)
            return None
        return super().on_receive(message)

    # ------------------------------------------------------------------ starting children
    def _start(self, actor_class: type[ChildActor], state: ChildState) -> None:
        record = _Record(actor_class, state)
        self._records[state.handle.id] = record
        self.runtime.children[state.handle.id] = state
        actor_class.start(state, state.handle, self.actor_ref)

    def _release_on_failure(self, future: ActorFuture[Any], handle: ActorHandle) -> None:
        def check(done: ActorFuture[Any]) -> None:
            if done.exception() is not None:
                release_child(self.runtime, handle)

        future.add_done_callback(check)

    def start_recovery(self, state: RecoveryState, future: ActorFuture[RecoveryState]) -> None:
        """Start the tree's recovery actor (once, at construction)."""
        self.runtime.check_open()
        self._start(RecoveryActor, state)
        future.set_result(state)

    def start_training(
        self,
        mode: str,
        args: tuple[Any, ...],
        future: ActorFuture[TrainingState],
    ) -> None:
        """Start a TrainingActor and hand it its creation call.

        ``mode`` ``"create"``: args ``(base_model, lora_config, user_metadata,
        optimizer_config)``;
        ``"load"``: args ``(path, optimizer, user_metadata)`` (create-via-load).
        """
        self.runtime.check_open()
        seq = self.runtime.next_model_seq_id()
        handle = ActorHandle("training", f"{self.runtime.session_id}:train:{seq}")
        state = TrainingState(self.runtime, handle, seq)
        state.track(future)
        self._start(TrainingActor, state)
        self._release_on_failure(future, handle)
        fn = TrainingActor.create_model if mode == "create" else TrainingActor.create_from_state
        handle.send(Call(fn, args, future))

    def start_sampling(
        self,
        base_model: str | None,
        model_path: str | None,
        known_base_model: str | None,
        future: ActorFuture[SamplerState],
    ) -> None:
        """Start a SamplingActor that creates its sampling session."""
        self.runtime.check_open()
        seq = self.runtime.next_sampling_session_seq_id()
        state = self._sampler_state(f"{self.runtime.session_id}:sample:{seq}")
        state.track(future)
        self._start(SamplingActor, state)
        self._release_on_failure(future, state.handle)
        state.handle.send(
            Call(SamplingActor.create, (seq, base_model, model_path, known_base_model), future)
        )

    def adopt_sampling(
        self,
        sampler_id: str,
        base_model: str | None,
        model_path: str | None,
        future: ActorFuture[SamplerState],
    ) -> None:
        """Start a SamplingActor for a sampling session the server already created."""
        self.runtime.check_open()
        state = self._sampler_state(sampler_id)
        state.track(future)
        self._start(SamplingActor, state)
        self._release_on_failure(future, state.handle)
        state.handle.send(Call(SamplingActor.adopt, (sampler_id, base_model, model_path), future))

    def _sampler_state(self, name: str) -> SamplerState:
        return SamplerState(self.runtime, ActorHandle("sampling", name), samplers.new_key())

    # ------------------------------------------------------------------ supervision
    def _child_crashed(self, message: ChildCrashed) -> None:
        handle = message.handle
        record = self._records.get(handle.id)
        if record is None or handle.closed or message.generation != handle.generation:
            # Released, closing, or an old generation's late report.
            if record is None or handle.closed:
                handle.answer_waiting(handle.gone_error())
            return
        error = message.error
        now = time.monotonic()
        while record.restarts and now - record.restarts[0] >= self.restart_period:
            record.restarts.popleft()
        meta = {
            "client": handle.kind,
            "id": handle.name,
            "restarts": len(record.restarts),
            "kind": type(error).__name__,
            "reason": str(error)[:500],
            "tenant_id": self.runtime.config.tenant_id,
        }
        log = get_logger("supervisor")
        if self.runtime.closed:
            handle.answer_waiting(ClientClosedError("the ServiceClient was closed"))
            return
        if len(record.restarts) >= self.max_restarts:
            failure = ChildFailedError(
                f"the {handle.kind} client {handle.name} crashed {len(record.restarts) + 1} "
                f"times within {self.restart_period:g} s; it is failed for good (last error: "
                f"{type(error).__name__}: {error})"
            )
            failure.__cause__ = error
            handle.fail(failure)  # answers the calls still waiting
            self._forget(handle)
            log.error("tinkex.actor.failed", **meta)
            telemetry.execute(CHILD_FAILED, {"monotonic_time": time.monotonic_ns()}, meta)
            return
        record.restarts.append(now)
        log.warning("tinkex.actor.restarted", **meta)
        telemetry.execute(CHILD_RESTARTED, {"monotonic_time": time.monotonic_ns()}, meta)
        record.actor_class.start(record.state, handle, self.actor_ref)

    def _forget(self, handle: ActorHandle) -> None:
        record = self._records.pop(handle.id, None)
        self.runtime.children.pop(handle.id, None)
        if record is not None:
            record.state.retire_threads()

    def _release(self, handle: ActorHandle) -> None:
        record = self._records.get(handle.id)
        if record is None:
            return
        self._forget(handle)
        state = record.state
        if isinstance(state, SamplerState):
            samplers.withdraw(state.key)
            if not state.closed:
                # The facade was dropped: samples already sent still complete, polled singly
                # now that the actor (the session's poller) stops.
                fall_back(state, None)
        ref = handle.ref
        if ref is not None:
            with contextlib.suppress(pykka.ActorDeadError):
                ref.stop(block=False)

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """The root crashed (a bug): the ServiceClient is failed; close() still works."""
        self.handle.answer_waiting(ClientClosedError("the ServiceClient's actor crashed"))
        get_logger("supervisor").error(
            "tinkex.service.crashed",
            session_id=self.runtime.session_id,
            kind=type(exception_value).__name__,
        )
        self.handle.fail(
            ChildFailedError(
                f"the ServiceClient's actor crashed ({type(exception_value).__name__}: "
                f"{exception_value}); close it and create a new one"
            )
        )
