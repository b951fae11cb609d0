"""Sampling: the SamplingActor (lifecycle only) and the sample task (the hot path).

A SamplingActor creates its sampling session (or adopts one the server created), publishes
the sampler's snapshot in the shared registry and withdraws it when the client closes. It is
*not* on the path of a sample: ``SamplingClient.sample()`` reads the snapshot and the
tenant's back-off without a lock or a mailbox hop, validates, and queues one
:func:`sample_task` on the tenant's worker pool. The task:

1. waits out the tenant's back-off (set by any 429 of the tenant);
2. takes an in-flight slot (at most ``sample_max_inflight`` per tenant, or
   ``sample_max_inflight_throttled`` within ``SAMPLE_THROTTLE_WINDOW`` seconds of a back-off);
3. POSTs ``asample`` (``X-Tinker-Sampling-Backpressure: 1``, no transport retries). A 429 sets
   the back-off (1 s; 5 s for prompts estimated over 128 KiB) and the same request (same
   ``seq_id``, same idempotency key) is sent again after it; other retryable failures are
   retried with the transport's back-off policy; success clears the back-off;
4. polls the result (protobuf) and stamps each sequence with its ``sample_sequence_ids``
   entry. A 410 (promise expired) re-submits the sample with a new ``seq_id``.
"""

from __future__ import annotations

import itertools
import time
from typing import Any, Final, TypeVar

import orjson

from tinkex_actors import _constants as c
from tinkex_actors.actors._base import ActorHandle, Call, ChildActor, Crash
from tinkex_actors.actors._client_state import ClientState
from tinkex_actors.actors._poller import fast_key, poll_future, untyped_future
from tinkex_actors.actors._queue_state import QueueStateTracker
from tinkex_actors.actors._registry import SamplerSnapshot, samplers
from tinkex_actors.actors._runtime import Runtime
from tinkex_actors.errors import (
    ActorCrashedError,
    ClientClosedError,
    GoneError,
    RateLimitError,
    TinkexError,
    TinkexTimeoutError,
)
from tinkex_actors.futures import ActorFuture
from tinkex_actors.transport import RetryPolicy, path_segment
from tinkex_actors.types import (
    CreateSamplingSessionRequest,
    CreateSamplingSessionResponse,
    GetSamplerResponse,
    ImageAssetPointerChunk,
    ImageChunk,
    ModelInput,
    SampleResponse,
)
from tinkex_actors.types._model_input import DmelChunk
from tinkex_actors.wire import decode_json, encode_json

__all__ = ["SamplerState", "SamplingActor", "sample_task"]

T = TypeVar("T")

_ASAMPLE_PATH: Final = f"{c.API_PREFIX}/asample"
_CREATE_PATH: Final = f"{c.API_PREFIX}/create_sampling_session"
_SAMPLERS_PATH: Final = f"{c.API_PREFIX}/samplers/"
_BACKPRESSURE: Final = {c.HEADER_SAMPLING_BACKPRESSURE: "1"}
# 429 is not retried by the transport: it is the protocol's back-pressure signal, handled
# here (the tenant backs off, then the same request is sent again).
_SUBMIT_POLICY: Final = RetryPolicy(retry_statuses=frozenset({408}))


class SamplerState(ClientState):
    """A sampling client's mutable runtime state (outside its actor, so restarts keep it).

    Attributes:
        runtime: the ServiceClient tree's context.
        handle: the handle of the client's SamplingActor.
        key: the client's key in the sampler registry.
        seq: the ``seq_id`` counter (from 0; atomic).
        pending: sample futures not yet complete.
    """

    def __init__(self, runtime: Runtime, handle: ActorHandle, key: int) -> None:
        super().__init__(runtime, handle)
        self.key = key
        self.seq = itertools.count()
        self.tracker = QueueStateTracker("sampling", handle.name, runtime.config.tenant_id)

    def close(self) -> None:
        """Withdraw the snapshot, mark closed and fail pending samples (ClientClosedError)."""
        self.closed = True
        samplers.withdraw(self.key)
        self.fail_pending(ClientClosedError(f"the sampling client {self.handle.name} was closed"))

    def publish(self, sampler_id: str, base_model: str | None, model_path: str | None) -> None:
        """Publish the sampler's snapshot."""
        self.handle.name = sampler_id
        self.tracker.rename(sampler_id)
        samplers.publish(self.key, SamplerSnapshot(sampler_id, base_model, model_path, self))


def prompt_bytes(prompt: ModelInput) -> int:
    """The protocol's size estimate of a prompt (10 bytes per token, raw image bytes)."""
    total = 0
    for chunk in prompt.chunks:
        if isinstance(chunk, ImageChunk):
            total += len(chunk.data)
        elif isinstance(chunk, ImageAssetPointerChunk):
            total += len(chunk.location)
        elif isinstance(chunk, DmelChunk):
            total += len(chunk.dmel)
        else:
            total += chunk.length * c.SAMPLE_BYTES_PER_TOKEN
    return total


def sample_task(
    snapshot: SamplerSnapshot,
    body: dict[str, Any],
    seq: int,
    deadline: float | None,
    prompt: ModelInput,
) -> SampleResponse:
    """Submit one sample and wait for its result (runs on a worker; see the module doc)."""
    try:
        return _sample(snapshot, body, seq, deadline, prompt)
    except TinkexError:
        raise
    except Exception as exc:
        snapshot.state.handle.send_crash(Crash(exc))
        raise ActorCrashedError(
            f"sampling client {snapshot.sampler_id}: unexpected {type(exc).__name__} "
            f"while sampling: {exc}"
        ) from exc


def _wait_backoff(state: SamplerState, deadline: float | None) -> None:
    limiter = state.runtime.limiter
    while True:
        until = limiter.backoff_until
        if not until:
            return
        now = time.monotonic()
        if until <= now:
            return
        if deadline is not None and deadline <= now:
            raise TinkexTimeoutError("the sample's timeout passed during the 429 back-off")
        stop = until if deadline is None else min(until, deadline)
        if state.runtime.wait(stop - now) and state.is_closed():
            raise ClientClosedError("the client was closed while the sample backed off")


def _sample(
    snapshot: SamplerSnapshot,
    body: dict[str, Any],
    seq: int,
    deadline: float | None,
    prompt: ModelInput,
) -> SampleResponse:
    state = snapshot.state
    runtime = state.runtime
    limiter = runtime.limiter
    transport = runtime.transport
    config = runtime.config
    key = fast_key()
    while True:
        if state.is_closed():
            raise ClientClosedError(f"the sampling client {snapshot.sampler_id} was closed")
        _wait_backoff(state, deadline)
        limiter.acquire(deadline, state.is_closed)
        try:
            started = time.monotonic()
            timeout: float | None = None
            if deadline is not None:
                left = deadline - started
                if left <= 0:
                    raise TinkexTimeoutError("the sample's timeout passed before it was sent")
                timeout = max(min(config.timeout, left), c.POLL_MIN_TIMEOUT)
            try:
                response = transport.request(
                    "POST",
                    _ASAMPLE_PATH,
                    body=orjson.dumps({**body, "seq_id": seq}),
                    headers=_BACKPRESSURE,
                    timeout=timeout,
                    max_retries=config.max_retries,
                    idempotency_key=key,
                    policy=_SUBMIT_POLICY,
                    deadline=deadline,
                    sleep=runtime.wait,
                )
            except RateLimitError:
                large = prompt_bytes(prompt) > c.SAMPLE_LARGE_PROMPT_BYTES
                limiter.set_backoff(c.SAMPLE_BACKOFF_LARGE if large else c.SAMPLE_BACKOFF)
                continue  # same seq_id and key after the back-off
            except TinkexError:
                if state.is_closed():
                    raise ClientClosedError(
                        f"the sampling client {snapshot.sampler_id} was closed"
                    ) from None
                raise
            limiter.clear_backoff()
            submitted = untyped_future(response)
            try:
                result = poll_future(
                    runtime,
                    submitted.request_id,
                    SampleResponse,
                    request_type="Sample",
                    proto=True,
                    tracker=state.tracker,
                    deadline=deadline,
                    roundtrip=time.monotonic() - started,
                    is_closed=state.is_closed,
                )
            except GoneError:
                # The promise expired: this is a new sample now.
                seq = next(state.seq)
                key = fast_key()
                continue
            ids = submitted.sample_sequence_ids
            return result if ids is None else result.with_sequence_ids(ids)
        finally:
            limiter.release()


class SamplingActor(ChildActor):
    """A sampling client's lifecycle: create or adopt the session, publish, withdraw."""

    def __init__(
        self,
        state: SamplerState,
        handle: ActorHandle,
        supervisor: Any | None = None,
        backlog: list[Call] | None = None,
    ) -> None:
        super().__init__(handle, supervisor, backlog)
        self.state = state

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
        response = runtime.transport.request("POST", _CREATE_PATH, body=encode_json(request))
        sampler_id = decode_json(
            CreateSamplingSessionResponse, response.content
        ).sampling_session_id
        base = base_model or known_base_model
        if base is None:
            info = runtime.transport.request("GET", _SAMPLERS_PATH + path_segment(sampler_id))
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
        self.state.publish(sampler_id, base_model, model_path)
        future.set_result(self.state)
