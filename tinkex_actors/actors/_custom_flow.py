"""The two phases of a custom-loss call, run on the training client's result lane.

``TrainingClient.forward_backward_custom`` sends phase 1, a forward-only ``cross_entropy``
pass, through the TrainingActor, which reserves one seq_id per chunk for phase 2
(:meth:`TrainingActor.submit_reserving`) before it takes the next call. Then, on the lane
(never in the actor's thread): poll phase 1, hand its outputs to ``compute`` (the user's
loss, which returns the phase-2 data), send phase 2 (``cross_entropy`` with those weights)
under the reserved seq_ids, poll it and complete the caller's future. A call submitted after
the custom one (an ``optim_step``) has a later seq_id, so the server runs it after phase 2.

Every reserved seq_id is sent, whatever happens. When phase 1 failed or ``compute`` raised,
the reserved ids carry phase 1's chunks again, forward-only: a request any Tinker server
accepts and runs without touching the weights or the accumulated gradients, so the model's
later requests never wait out the server's gap timeout for an id that will not come.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

import attrs

from tinkex_actors import _endpoints as ep
from tinkex_actors.actors._poller import UntypedFuture
from tinkex_actors.actors._training import TrainingState, guarded, poll_chunks, post_reserved
from tinkex_actors.errors import TinkexError
from tinkex_actors.futures import ActorFuture
from tinkex_actors.types import (
    Datum,
    ForwardBackwardInput,
    ForwardBackwardOutput,
    ForwardBackwardRequest,
)
from tinkex_actors.wire import encode_forward_backward_request

__all__ = ["SURROGATE_LOSS", "CustomCall", "CustomLossResult", "finish_metrics", "run_custom"]

#: The server loss both phases use: its gradient by each logprob is minus the token's weight.
SURROGATE_LOSS: Final = "cross_entropy"


@dataclass(frozen=True)
class CustomLossResult:
    """What the user's loss produced: the phase-2 datums and the numbers to report.

    Attributes:
        data: one datum per input datum, in order: its model input, ``target_tokens`` and
            ``weights = -dloss/dlogprobs``.
        loss: the custom loss's value (reported as ``loss:sum``).
        metrics: the loss function's own metrics.
    """

    data: list[Datum]
    loss: float
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class CustomCall:
    """One forward_backward_custom call, as the lane runs it.

    Attributes:
        model_id: the model.
        forward_bodies: phase 1's chunks, encoded without a seq_id (also the fillers).
        chunk_sizes: datums per chunk; phase 2 keeps these boundaries, one reserved id each.
        compute: the user's loss over phase 1's output (runs on the lane).
    """

    model_id: str
    forward_bodies: list[bytes]
    chunk_sizes: list[int]
    compute: Callable[[ForwardBackwardOutput], CustomLossResult]


def finish_metrics(
    output: ForwardBackwardOutput, result: CustomLossResult
) -> ForwardBackwardOutput:
    """Phase 2's output with the caller's metrics: the loss function's own, ``loss:sum`` =
    the custom loss, ``surrogate_loss:sum`` = the server's ``cross_entropy`` sum."""
    metrics = dict(output.metrics)
    surrogate = metrics.pop("loss:sum", None)
    metrics.update(result.metrics)
    metrics["loss:sum"] = result.loss
    if surrogate is not None:
        metrics["surrogate_loss:sum"] = surrogate
    return attrs.evolve(output, metrics=metrics)


def _encode_phase2(call: CustomCall, data: list[Datum]) -> list[bytes]:
    bodies: list[bytes] = []
    offset = 0
    for size in call.chunk_sizes:
        batch = ForwardBackwardInput(data=data[offset : offset + size], loss_fn=SURROGATE_LOSS)
        offset += size
        request = ForwardBackwardRequest(forward_backward_input=batch, model_id=call.model_id)
        bodies.append(encode_forward_backward_request(request, forward_only=False))
    return bodies


def _fill(state: TrainingState, call: CustomCall, first: int, start: int) -> None:
    """Send reserved ids ``start..`` as forward-only fillers (best effort, never raises)."""
    if state.is_closed():
        return
    log = state.logger("training")
    with state.blocking():
        for index in range(start, len(call.forward_bodies)):
            try:
                post_reserved(state, call.forward_bodies[index], first + index)
            except TinkexError as exc:
                # A 409 means the id's real request got there after all; anything else
                # leaves a gap the server steps over after its gap timeout.
                log.warning(
                    "tinkex.training.custom_filler_failed",
                    seq_id=first + index,
                    error=type(exc).__name__,
                )


def _phase2(
    state: TrainingState, call: CustomCall, bodies: list[bytes], first: int
) -> ForwardBackwardOutput:
    started = time.monotonic()
    sent: list[UntypedFuture] = []
    for index, body in enumerate(bodies):
        try:
            sent.append(post_reserved(state, body, first + index))
        except BaseException:
            _fill(state, call, first, index)  # this id may be in doubt: a 409 then says so
            raise
    return poll_chunks(state, sent, ep.FORWARD_BACKWARD, time.monotonic() - started)


def run_custom(
    state: TrainingState,
    call: CustomCall,
    submitted: list[UntypedFuture],
    first: int,
    roundtrip: float,
    future: ActorFuture[ForwardBackwardOutput],
) -> None:
    """Phase 1's result, the user's loss, phase 2; completes ``future`` (a lane task).

    ``first`` is the first of ``len(call.chunk_sizes)`` reserved seq_ids. The user's
    exception, or the ValidationError about what the loss returned, fails ``future`` as it
    is; server and network errors fail it as for any training call.
    """
    try:
        forward = guarded(state, poll_chunks, state, submitted, ep.FORWARD, roundtrip)
        result = call.compute(forward)  # the user's code: outside guarded, never a crash
        bodies = _encode_phase2(call, result.data)
    except BaseException as exc:
        try:
            _fill(state, call, first, 0)  # before the caller hears of it: no gap to wait out
        finally:
            future.set_exception(exc)
        return
    try:
        output = guarded(state, _phase2, state, call, bodies, first)
    except BaseException as exc:
        future.set_exception(exc)
        return
    future.set_result(finish_metrics(output, result))
