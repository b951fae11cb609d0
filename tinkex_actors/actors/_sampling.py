"""SamplingActor: a sampling client's lifecycle and its session's batched completion poll.

The actor creates its sampling session (or adopts one the server created), publishes the
sampler's snapshot in the shared registry, and owns the session's ``retrieve_futures`` poll
cursor: while samples are pending it long-polls the session for their completions (one
:data:`POLL` message per poll, so the mailbox stays responsive between polls) and hands each
completion to the tenant's sampling lane to fetch. It is *not* on the path of a submission:
``SamplingClient.sample()`` reads the snapshot without a lock and queues the work itself (see
:mod:`~tinkex_actors.actors._sample_flow`).
"""

from __future__ import annotations

from typing import Any, Final

import pykka

from tinkex_actors import _endpoints as ep
from tinkex_actors.actors._base import ActorHandle, ChildActor
from tinkex_actors.actors._lost import create_in_session
from tinkex_actors.actors._runtime import Runtime
from tinkex_actors.actors._sample_flow import fall_back, poll_completions
from tinkex_actors.actors._sampler_state import SamplerState
from tinkex_actors.futures import ActorFuture
from tinkex_actors.transport import Response
from tinkex_actors.types import (
    CreateSamplingSessionRequest,
    CreateSamplingSessionResponse,
    GetSamplerResponse,
)
from tinkex_actors.wire import decode_json

__all__ = ["POLL", "SamplerState", "SamplingActor", "create_sampling_session", "request_poll"]

_CREATE_PATH: Final = ep.CREATE_SAMPLING_SESSION.path()


class _Poll:
    """The message that makes a SamplingActor run one batched poll."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "POLL"


#: The one poll message (a SamplingActor tells it to itself while there is more to poll).
POLL: Final = _Poll()


def request_poll(state: SamplerState) -> bool:
    """Tell ``state``'s actor to poll; False when it cannot be told (stopped, restarting)."""
    ref = state.handle.ref
    if ref is None:
        return False
    try:
        ref.tell(POLL)
    except pykka.ActorDeadError:
        return False
    return True


def create_sampling_session(
    runtime: Runtime, request: CreateSamplingSessionRequest, *, wait: bool = True
) -> Response:
    """POST ``create_sampling_session`` (a session the server says is gone is replaced first:
    see :func:`~tinkex_actors.actors._lost.create_in_session`)."""
    return create_in_session(runtime, _CREATE_PATH, request, wait=wait)[0]


class SamplingActor(ChildActor):
    """A sampling client's lifecycle: create or adopt the session, publish, withdraw."""

    def __init__(
        self,
        state: SamplerState,
        handle: ActorHandle,
        supervisor: Any | None = None,
    ) -> None:
        super().__init__(handle, supervisor)
        self.state = state
        if state.polling:
            # A replacement after a crash: the poll loop was running; keep it going.
            self.actor_ref.tell(POLL)

    def on_receive(self, message: Any) -> Any:
        """Calls (create, adopt) and :data:`POLL`."""
        if message is POLL:
            self._poll()
            return None
        return super().on_receive(message)

    def _poll(self) -> None:
        state = self.state
        try:
            more = poll_completions(state)
        except Exception as exc:
            # Nothing may wait on a poll loop that is about to die: poll singly from now on.
            fall_back(state, f"the poll loop crashed: {type(exc).__name__}: {exc}")
            raise
        if more:
            self.actor_ref.tell(POLL)

    def create(
        self,
        sampling_session_seq_id: int,
        base_model: str | None,
        model_path: str | None,
        known_base_model: str | None,
        future: ActorFuture[SamplerState],
    ) -> None:
        """``create_sampling_session``; ``GET samplers/{id}`` when the base model is unknown."""
        state = self.state
        runtime = state.runtime
        request = CreateSamplingSessionRequest(
            session_id=runtime.session_id,
            sampling_session_seq_id=sampling_session_seq_id,
            base_model=base_model,
            model_path=model_path,
        )
        response = create_sampling_session(runtime, request)
        sampler_id = decode_json(
            CreateSamplingSessionResponse, response.content
        ).sampling_session_id
        base = base_model or known_base_model
        if base is None:
            info = runtime.transport.request("GET", ep.GET_SAMPLER.path(sampler_id=sampler_id))
            base = decode_json(GetSamplerResponse, info.content).base_model
        state.publish(sampler_id, base, model_path)
        future.set_result(state)

    def adopt(
        self,
        sampler_id: str,
        base_model: str | None,
        model_path: str | None,
        future: ActorFuture[SamplerState],
    ) -> None:
        """Publish a sampling session the server already created (unnamed sampler save)."""
        # A snapshot of a live adapter has no source to be created again from.
        self.state.recreatable = model_path is not None
        self.state.publish(sampler_id, base_model, model_path)
        future.set_result(self.state)
