"""TrainingActor: one per TrainingClient; its mailbox serializes *submission* in seq_id order.

A call reaches the actor as one mailbox message. The actor assigns the model's next
``seq_id`` (1, 2, 3, ... without gaps), POSTs the request (forward_backward: one POST per
chunk, bodies already validated, chunked and encoded in the caller's thread), and hands the
untyped futures to the client's own result lane (one thread, started on demand), which polls
them, combines chunk outputs in order and completes the caller's :class:`ActorFuture`. The
server runs a model's requests in seq_id order, so polling them one after another in that
order costs no wait, and no sampling work (on other lanes) can delay a training result. The
actor is then free for the next message: an ``optim_step`` submitted right after a
``forward_backward`` is sent without waiting for the forward_backward's result, so a training
loop pipelines.

State that must survive a restart (model id, next seq_id, cached get_info, pending futures)
lives in :class:`TrainingState`, outside the actor instance: a restarted actor continues the
same server model and the same seq_id sequence.

Sequencing rule (the official SDK's, which the hosted service is built for): a seq_id is used
once, whatever happens to its request. Answered (accepted, or rejected with a 4xx, which the
server counts as consumed) or given up on without an answer (the server may hold it or not),
the next request takes the next id; the server skips an id that never arrives after its gap
timeout. Only a request that never left the client (a bad argument, a closed client, an
unexpected exception that crashes the actor) leaves its id free. Retries of one request (same
body, same idempotency key) keep its seq_id.
A custom-loss call reserves the ids of its second phase when its first is sent
(``submit_reserving``), and its worker sends every reserved id, as a real request or a
harmless forward-only one.

Recovery hooks (see :mod:`~tinkex_actors.actors._lost`): a call the server answers "model
gone" (410, or a 404 naming the model) fences the client; while fenced every call fails with
:class:`~tinkex_actors.errors.ModelLostError`. The actor records what a restore needs: how the
model was created, the newest ``save_state`` result and the optimizer steps done. After a
restore it installs the new model (new id, seq_ids from 1) and writes the current model id
into every body, so calls built for the old id go to the new one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

import orjson

from tinkex_actors import _constants as c
from tinkex_actors import _endpoints as ep
from tinkex_actors._endpoints import QueuedEndpoint
from tinkex_actors._metrics_reduction import combine_forward_backward_outputs
from tinkex_actors.actors._base import ActorHandle, ChildActor, Crash
from tinkex_actors.actors._client_state import ClientState
from tinkex_actors.actors._lost import (
    ModelGuard,
    create_in_session,
    model_gone,
    model_lost,
    result_lost,
)
from tinkex_actors.actors._poller import UntypedFuture, fast_key, poll_future, untyped_future
from tinkex_actors.actors._pool import WorkerPool
from tinkex_actors.actors._queue_state import QueueStateTracker
from tinkex_actors.actors._runtime import Runtime
from tinkex_actors.errors import (
    ActorCrashedError,
    APIError,
    ClientClosedError,
    GoneError,
    NotFoundError,
    ResponseDecodeError,
    TinkexError,
)
from tinkex_actors.futures import ActorFuture
from tinkex_actors.types import (
    CreateModelRequest,
    ForwardBackwardOutput,
    GetInfoResponse,
    LoadWeightsRequest,
    LoraConfig,
    OptimizerConfig,
)
from tinkex_actors.wire import decode_json, seal_forward_backward

__all__ = [
    "TrainingActor",
    "TrainingState",
    "fetch_info",
    "guarded",
    "poll_chunks",
    "post_reserved",
]

T = TypeVar("T")

#: Forward-only passes go to the same path (``forward_only`` is set in the body).
_FWDBWD_PATH: Final = ep.FORWARD_BACKWARD.path()
_ZSTD_HEADERS: Final = {"Content-Encoding": "zstd"}


class TrainingState(ClientState):
    """What a TrainingClient keeps across actor restarts.

    Attributes:
        runtime: the ServiceClient tree's context.
        handle: the handle facades send calls through.
        model_seq_id: the session counter value this model was created with.
        model_id: the server's model id (known once created).
        info: the cached get_info answer.
        next_seq: the next request's seq_id (touched only by the actor's thread).
        pending: futures of calls not yet complete (failed with ClientClosedError on close).
    """

    def __init__(self, runtime: Runtime, handle: ActorHandle, model_seq_id: int) -> None:
        super().__init__(runtime, handle)
        self.model_seq_id = model_seq_id
        self.model_id = ""
        self.info: GetInfoResponse | None = None
        self.next_seq = 1
        self.tracker = QueueStateTracker(
            "training",
            f"{runtime.session_id}:model_seq_id={model_seq_id}",
            runtime.config.tenant_id,
        )
        #: This client's result lane: polls in seq_id order, never behind sampling work.
        self.lane = WorkerPool(
            1, name=f"tinkex-train-{handle.id}", idle_timeout=c.WORKER_IDLE_TIMEOUT
        )
        #: Recovery bookkeeping: origin, last checkpoint, fence, restore ticket.
        self.guard = ModelGuard()

    def log_ids(self) -> dict[str, str]:
        """``model_id`` (before the model exists: its session counter)."""
        return {"model_id": self.model_id or f"model_seq_id={self.model_seq_id}"}

    def threads(self) -> list[threading.Thread]:
        """The result lane's thread, when it runs."""
        return self.lane.threads()

    def retire_threads(self) -> None:
        """Stop the result lane once its current work is done."""
        self.lane.shutdown(wait=False)

    def close(self) -> None:
        """Mark closed, cut its polls short and fail what is pending with ClientClosedError."""
        self.mark_closed()
        self.retire_threads()
        self.fail_pending(ClientClosedError(f"the training client {self.model_id} was closed"))

    def set_model(self, model_id: str, info: GetInfoResponse) -> None:
        """Record the created model."""
        self.model_id = model_id
        self.info = info
        self.handle.name = model_id
        self.tracker.rename(model_id)


def fetch_info(runtime: Runtime, model_id: str) -> GetInfoResponse:
    """``get_info`` for ``model_id``."""
    response = runtime.transport.request(
        "POST", ep.GET_INFO.path(), body=orjson.dumps({"model_id": model_id, "type": "get_info"})
    )
    return decode_json(ep.GET_INFO.response, response.content)


def guarded(state: TrainingState, fn: Callable[..., T], *args: Any) -> T:
    """Run a worker task for ``state``; escalate an unexpected exception to its actor.

    The caller's future gets :class:`ActorCrashedError`; the actor is told to crash, so the
    supervisor restarts it (or gives up on the client after too many crashes).
    """
    try:
        with state.blocking():
            return fn(*args)
    except TinkexError:
        raise
    except Exception as exc:
        state.handle.send_crash(Crash(exc))
        error = ActorCrashedError(
            f"training client {state.model_id or state.model_seq_id}: unexpected "
            f"{type(exc).__name__} while waiting for a result: {exc}"
        )
        raise error from exc


def _poll(
    state: TrainingState,
    request: UntypedFuture,
    endpoint: QueuedEndpoint[T],
    proto: bool,
    roundtrip: float | None,
    model_id: str = "",
) -> T:
    try:
        return poll_future(
            state.runtime,
            request.request_id,
            endpoint.response,
            request_type=endpoint.request_type,
            proto=proto,
            tracker=state.tracker,
            roundtrip=roundtrip,
            is_closed=state.is_closed,
        )
    except (GoneError, NotFoundError) as exc:
        error = result_lost(state, model_id, endpoint.request_type, exc)
        if error is exc:
            raise
        raise error from None  # the fence's error is shared by many calls: no per-call cause


def poll_chunks(
    state: TrainingState,
    requests: list[UntypedFuture],
    endpoint: QueuedEndpoint[ForwardBackwardOutput],
    roundtrip: float,
    model_id: str = "",
) -> ForwardBackwardOutput:
    """Poll a forward(_backward)'s chunks in order and combine their outputs (``endpoint``:
    ``FORWARD_BACKWARD`` or ``FORWARD``)."""
    # Chunks run on the server in seq_id order, so polling them in order costs no extra wait.
    outputs = [_poll(state, request, endpoint, True, roundtrip, model_id) for request in requests]
    if len(outputs) == 1:
        return outputs[0]
    return combine_forward_backward_outputs(outputs)


def post_reserved(state: TrainingState, body: bytes, seq: int) -> UntypedFuture:
    """POST a forward_backward chunk (encoded without a seq_id) under a reserved ``seq``.

    For the requests of :meth:`TrainingActor.submit_reserving`, sent later from a worker
    thread: the seq_id was taken from the sequence when it was reserved, so nothing here
    touches ``next_seq``.
    """
    compress = state.runtime.compress
    data = seal_forward_backward(body, seq, zstd=compress)
    headers = _ZSTD_HEADERS if compress else None
    response = state.runtime.transport.request(
        "POST",
        _FWDBWD_PATH,
        body=data,
        content_type=c.CONTENT_PROTOBUF,
        headers=headers,
        idempotency_key=fast_key(),
    )
    return untyped_future(response)


def _finish_create(
    state: TrainingState, request: UntypedFuture, endpoint: QueuedEndpoint[Any], rt: float
) -> TrainingState:
    answer = _poll(state, request, endpoint, False, rt)
    model_id = getattr(answer, "model_id", None) or request.model_id or state.model_id
    if not model_id:
        raise ResponseDecodeError(
            "the model creation finished without a model id", expected="CreateModelResponse"
        )
    state.set_model(model_id, fetch_info(state.runtime, model_id))
    return state


class TrainingActor(ChildActor):
    """Serializes one model's submissions. Messages are :class:`Call` objects."""

    def __init__(
        self,
        state: TrainingState,
        handle: ActorHandle,
        supervisor: Any | None = None,
    ) -> None:
        super().__init__(handle, supervisor)
        self.state = state

    # ------------------------------------------------------------------ helpers
    def _post_sequenced(
        self,
        path: str,
        body: Callable[[int], bytes],
        *,
        content_type: str = c.CONTENT_JSON,
        headers: Mapping[str, str] | None = None,
    ) -> UntypedFuture:
        """POST the request of the model's next seq_id (see the module's sequencing rule)."""
        state = self.state
        state.guard.check()
        seq = state.next_seq
        data = body(seq)
        state.next_seq = seq + 1
        try:
            response = state.runtime.transport.request(
                "POST",
                path,
                body=data,
                content_type=content_type,
                headers=headers,
                idempotency_key=fast_key(),
            )
        except (GoneError, NotFoundError) as exc:
            if model_gone(state, exc):
                raise model_lost(state, state.model_id, exc.body or str(exc), "lost") from None
            raise  # the server may hold it: the id stays used
        except APIError:
            raise  # the server may hold it: the id stays used
        except BaseException:
            # Refused before sending (a bad argument, a closed client, a bug that crashes the
            # actor): the server never saw the id, so the next request takes it.
            state.next_seq = seq
            raise
        return untyped_future(response)

    def _hand_off(self, future: ActorFuture[Any], fn: Callable[..., Any], *args: Any) -> None:
        self.state.lane.submit_into(future, guarded, self.state, fn, *args)

    # ------------------------------------------------------------------ creation
    def create_model(
        self,
        base_model: str,
        lora_config: LoraConfig,
        user_metadata: dict[str, str] | None,
        optimizer_config: OptimizerConfig,
        future: ActorFuture[TrainingState],
    ) -> None:
        """``create_model``, then (on a worker) poll it and fetch ``get_info``."""
        state = self.state
        request = CreateModelRequest(
            session_id=state.runtime.session_id,
            model_seq_id=state.model_seq_id,
            base_model=base_model,
            user_metadata=user_metadata,
            lora_config=lora_config,
            optimizer_config=optimizer_config,
        )
        state.guard.set_origin(request)
        started = time.monotonic()
        response, _ = create_in_session(state.runtime, ep.CREATE_MODEL.path(), request)
        submitted = untyped_future(response)
        rt = time.monotonic() - started
        self._hand_off(future, _finish_create, state, submitted, ep.CREATE_MODEL, rt)

    def create_from_state(
        self,
        path: str,
        optimizer: bool,
        user_metadata: dict[str, str] | None,
        future: ActorFuture[TrainingState],
    ) -> None:
        """Create-via-load: ``load_weights`` with the session's ``model_seq_id``."""
        state = self.state
        request = LoadWeightsRequest(
            path=path,
            optimizer=optimizer,
            session_id=state.runtime.session_id,
            model_seq_id=state.model_seq_id,
            user_metadata=user_metadata,
        )
        state.model_id = request.derived_model_id or ""
        state.guard.set_origin(request)
        started = time.monotonic()
        response, sent = create_in_session(state.runtime, ep.LOAD_WEIGHTS.path(), request)
        state.model_id = sent.derived_model_id or ""  # in a replaced session: a new id
        submitted = untyped_future(response)
        rt = time.monotonic() - started
        self._hand_off(future, _finish_create, state, submitted, ep.LOAD_WEIGHTS, rt)

    # ------------------------------------------------------------------ training calls
    def _post_chunks(self, bodies: list[bytes]) -> tuple[list[UntypedFuture], float]:
        state = self.state
        compress = state.runtime.compress
        headers = _ZSTD_HEADERS if compress else None
        started = time.monotonic()
        submitted: list[UntypedFuture] = []
        # After a restore the body may name the old model: the current id replaces it.
        model = state.model_id if state.guard.restores else None
        for chunk in bodies:

            def body(seq: int, chunk: bytes = chunk) -> bytes:
                return seal_forward_backward(chunk, seq, model_id=model, zstd=compress)

            submitted.append(
                self._post_sequenced(
                    _FWDBWD_PATH, body, content_type=c.CONTENT_PROTOBUF, headers=headers
                )
            )
        return submitted, time.monotonic() - started

    def submit_forward(
        self,
        bodies: list[bytes],
        endpoint: QueuedEndpoint[ForwardBackwardOutput],
        future: ActorFuture[ForwardBackwardOutput],
    ) -> None:
        """POST each encoded chunk with the next seq_ids; a worker polls and combines."""
        submitted, rt = self._post_chunks(bodies)
        state = self.state
        self._hand_off(future, poll_chunks, state, submitted, endpoint, rt, state.model_id)

    def submit_reserving(
        self,
        bodies: list[bytes],
        reserve: int,
        then: Callable[[list[UntypedFuture], int, float, ActorFuture[Any]], None],
        future: ActorFuture[Any],
    ) -> None:
        """Like :meth:`submit_forward`, then reserve the next ``reserve`` seq_ids.

        Calls queued after this one get the ids after the reserved ones, so the server runs
        them after the reserved requests, which a worker sends later (:func:`post_reserved`).
        ``then(submitted, first_reserved, roundtrip, future)`` runs on the result lane and
        completes ``future``; it must send every reserved id, or the server holds this
        model's later requests for its gap timeout.
        """
        submitted, rt = self._post_chunks(bodies)
        state = self.state
        first = state.next_seq
        state.next_seq = first + reserve
        state.lane.execute(then, submitted, first, rt, future)

    def submit_json(
        self,
        endpoint: QueuedEndpoint[Any],
        payload: dict[str, Any],
        future: ActorFuture[Any],
    ) -> None:
        """POST a sequenced JSON request (``payload`` gets the seq_id and the current model
        id); a worker polls it."""
        state = self.state
        guard = state.guard
        started = time.monotonic()
        current = {"model_id": state.model_id} if "model_id" in payload else {}
        submitted = self._post_sequenced(
            endpoint.path(), lambda seq: orjson.dumps({**payload, **current, "seq_id": seq})
        )
        # Results complete in seq_id order on the client's one result lane, so when a save's
        # result arrives every earlier optim_step's has: the count is the checkpoint's step.
        if endpoint is ep.OPTIM_STEP:
            future.add_done_callback(guard.optim_done)
        elif endpoint is ep.SAVE_WEIGHTS:
            order = guard.next_order()

            def remember(done: ActorFuture[Any]) -> None:
                if done.exception() is None:
                    guard.saved(order, str(done.result().path), guard.optim_steps)

            future.add_done_callback(remember)
        rt = time.monotonic() - started
        self._hand_off(future, _poll, state, submitted, endpoint, False, rt, state.model_id)

    def submit_unsequenced(
        self, endpoint: QueuedEndpoint[Any], payload: dict[str, Any], future: ActorFuture[Any]
    ) -> None:
        """POST a request outside the seq_id sequence (unload_model); a worker polls it."""
        state = self.state
        state.guard.check()
        if endpoint is ep.UNLOAD_MODEL:
            state.guard.unloaded = True
        if "model_id" in payload:
            payload = {**payload, "model_id": state.model_id}
        started = time.monotonic()
        response = state.runtime.transport.request(
            endpoint.method, endpoint.path(), body=orjson.dumps(payload)
        )
        submitted = untyped_future(response)
        rt = time.monotonic() - started
        self._hand_off(future, _poll, self.state, submitted, endpoint, False, rt)
