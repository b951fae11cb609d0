"""The life of a sample, from ``sample()`` to its result, with no thread held while it waits.

::

    sample()  ──admit──►  sampling lane: submit (POST asample; 429 = the key backs off and the
    (caller)   or queue                 same request is sent again)
                                        │
                    batched (server announced retrieve_futures)     single polls (otherwise)
                    │                                               │
                    SamplingActor's poll loop reports completions   polls lane: retrieve_future
                    for every pending request of the session        long poll for this request
                    │                                               │
                    sampling lane: fetch the result (one            │
                    retrieve_future, already complete)              │
                    └──────────────────────────► finish ◄───────────┘
                                                   set the future, free the slot, admit the
                                                   next queued sample, acknowledge the id

A sample in flight holds no thread in batched mode: it is one entry in its client's
``watched`` map until the session's poll reports it. Single polls need one outstanding long
poll each, on a bounded lane (``Config.poll_threads``); completed requests answer at once, so
the lane drains quickly even when more samples are in flight than it has threads.

Deadlines (``sample(timeout=)``) are run by the tenant's :class:`Deadlines` thread, so a sample
fails on time whether it is queued, submitted or being fetched. A 410 (the server expired the
request) submits the sample again with a new ``seq_id``, keeping its slot.

Lost state (see docs/recovery.md): each submission names the client's *current* sampling
session, so a sample sent again after the session was re-created goes to the new one. An
``asample`` answered "unknown sampling session" parks the sample and tells the recovery actor,
which re-creates the session (the parked samples are then sent again) or gives up on it (they
fail with :class:`SamplerLostError`); with session recovery on, a poll answered 404 (a server
that forgot the request) sends the sample again too. A sample is sent again at most
``SAMPLE_MAX_RESUBMITS`` times.
"""

from __future__ import annotations

import functools
import random
import time
from typing import Any, Final

import orjson

from tinkex_actors import _constants as c
from tinkex_actors import _endpoints as ep
from tinkex_actors.actors._base import Crash
from tinkex_actors.actors._poller import fast_key, poll_future, untyped_future
from tinkex_actors.actors._sampler_state import SamplerState, Submission
from tinkex_actors.errors import (
    ActorCrashedError,
    APIConnectionError,
    APIStatusError,
    ClientClosedError,
    GoneError,
    NotFoundError,
    RateLimitError,
    ResponseDecodeError,
    TinkexError,
    TinkexTimeoutError,
)
from tinkex_actors.transport import POLL_POLICY, Response, RetryPolicy
from tinkex_actors.types import (
    ImageAssetPointerChunk,
    ImageChunk,
    ModelInput,
    SampleResponse,
)
from tinkex_actors.types._model_input import DmelChunk

__all__ = [
    "fail_all",
    "fall_back",
    "poll_completions",
    "poll_singly",
    "prompt_bytes",
    "send_again",
    "start",
]

_ASAMPLE_PATH: Final = ep.ASAMPLE.path()
_RETRIEVE_FUTURES_PATH: Final = ep.RETRIEVE_FUTURES.path()
_BACKPRESSURE: Final = {c.HEADER_SAMPLING_BACKPRESSURE: "1"}
# 429 is not retried by the transport: it is the protocol's back-pressure signal, handled in
# _submit (the key backs off, then the same request is sent again).
_SUBMIT_POLICY: Final = RetryPolicy(retry_statuses=frozenset({408}))


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


# ---------------------------------------------------------------------------- start and finish
def start(sub: Submission) -> None:
    """Admit ``sub`` (or queue it, holding no thread) and arm its deadline. Caller's thread.

    Raises:
        QueueFullError / TinkexTimeoutError / ClientClosedError: see ``SamplerState.admit``.
    """
    state = sub.state
    if state.lost is not None:
        sub.future.set_exception(state.lost)
        return
    if sub.deadline is not None:
        deadlines = state.runtime.tenant.deadlines
        sub.timer = deadlines.schedule(sub.deadline, functools.partial(_expire, sub))
        sub.future.add_done_callback(lambda _: _disarm(sub))
    if state.admit(sub):
        _dispatch_later(sub)


def _disarm(sub: Submission) -> None:
    if sub.timer is not None:
        sub.state.runtime.tenant.deadlines.cancel(sub.timer)


def finish(
    sub: Submission, result: SampleResponse | None = None, error: BaseException | None = None
) -> None:
    """Complete ``sub`` (once), free its slot and dispatch the next queued sample."""
    state = sub.state
    successor = state.settle(sub)
    if error is not None:
        sub.future.set_exception(error)
    elif result is not None:
        sub.future.set_result(result)
    if successor is not None:
        _dispatch_later(successor)


def _expire(sub: Submission) -> None:
    # The tenant's deadline thread: fail the sample now, wherever it is.
    finish(sub, error=TinkexTimeoutError("the sample's timeout passed before its result came"))


def _dispatch_later(sub: Submission) -> None:
    try:
        sub.state.runtime.tenant.sampling.execute(_dispatch, sub)
    except ClientClosedError as exc:
        finish(sub, error=exc)


def _closed_error(state: SamplerState) -> ClientClosedError:
    return ClientClosedError(f"the sampling client {state.sampler_id} was closed")


def _failed(sub: Submission, exc: BaseException) -> None:
    """Finish ``sub`` with ``exc``: typed errors as they are, anything else as a crash of the
    client's actor (let it crash: its supervisor restarts it)."""
    state = sub.state
    if state.is_closed():
        finish(sub, error=_closed_error(state))
    elif isinstance(exc, TinkexError):
        finish(sub, error=exc)
    else:
        state.handle.send_crash(Crash(exc))
        error = ActorCrashedError(
            f"sampling client {state.sampler_id}: unexpected {type(exc).__name__} while "
            f"sampling: {exc}"
        )
        error.__cause__ = exc
        finish(sub, error=error)


# ---------------------------------------------------------------------------- submission
def _dispatch(sub: Submission) -> None:
    """Sampling lane: submit ``sub``, then wait for its completion without a thread."""
    state = sub.state
    if sub.finished:
        return
    if state.is_closed():
        finish(sub, error=_closed_error(state))
        return
    state.begin_submit()
    try:
        with state.blocking():
            response = _submit(sub)
        submitted = untyped_future(response)
    except (NotFoundError, GoneError) as exc:
        if sub.sent_to and sub.sent_to in exc.body:
            _sampler_missing(sub, exc)
        else:
            _failed(sub, exc)
        return
    except Exception as exc:
        state.end_submit()
        _failed(sub, exc)
        return
    sub.request_id = submitted.request_id
    sub.sequence_ids = submitted.sample_sequence_ids
    if state.batched:
        start_polling, completed = state.watch(sub)
        if completed:
            with state.lock:
                state.fetching.add(sub.request_id)
            _fetch_later(sub)
        if start_polling:
            _start_poll_loop(state)
    else:
        state.end_submit()
        _poll_singly(sub)


def _submit(sub: Submission) -> Response:
    state = sub.state
    runtime = state.runtime
    limiter = runtime.tenant.limiter
    config = runtime.config
    while True:
        if state.is_closed():
            raise _closed_error(state)
        limiter.wait_backoff(sub.deadline, state.wait)
        limiter.enter_dispatch(sub.deadline, state.is_closed)
        started = time.monotonic()
        # The current session: after a re-creation a sample sent again goes to the new one.
        sub.sent_to = sampler = state.sampler_id
        try:
            timeout: float | None = None
            if sub.deadline is not None:
                left = sub.deadline - started
                if left <= 0:
                    raise TinkexTimeoutError("the sample's timeout passed before it was sent")
                timeout = max(min(config.timeout, left), c.POLL_MIN_TIMEOUT)
            response = runtime.transport.request(
                "POST",
                _ASAMPLE_PATH,
                body=orjson.dumps({**sub.body, "sampling_session_id": sampler, "seq_id": sub.seq}),
                headers=_BACKPRESSURE,
                timeout=timeout,
                max_retries=config.max_retries,
                idempotency_key=sub.key,
                policy=_SUBMIT_POLICY,
                deadline=sub.deadline,
                sleep=state.wait,
            )
        except RateLimitError:
            limiter.set_backoff(c.SAMPLE_BACKOFF_LARGE if sub.large else c.SAMPLE_BACKOFF)
            continue  # the same seq_id and key, after the back-off
        except TinkexError:
            if state.is_closed():
                raise _closed_error(state) from None
            raise
        finally:
            limiter.leave_dispatch()
        limiter.clear_backoff()
        sub.roundtrip = time.monotonic() - started
        return response


def _resubmit(sub: Submission, exc: TinkexError) -> None:
    # The server expired (410) or forgot (404) the request: a new sample now, same slot.
    state = sub.state
    if sub.resubmits >= c.SAMPLE_MAX_RESUBMITS:
        finish(sub, error=exc)
        return
    with state.lock:
        if sub.finished:
            return
        if sub.request_id is not None:
            state.watched.pop(sub.request_id, None)
        sub.request_id = None
    send_again(sub)


def send_again(sub: Submission) -> None:
    """Submit ``sub`` again as a new request (new ``seq_id`` and key), in its slot."""
    state = sub.state
    sub.resubmits += 1
    sub.seq = next(state.seq) + state.clone_id * c.SAMPLE_SEQ_ID_STRIDE
    sub.key = fast_key()
    _dispatch_later(sub)


def fail_all(subs: list[Submission], error: TinkexError) -> None:
    """Fail each of ``subs`` with ``error`` (parked samples of a lost sampling session)."""
    for sub in subs:
        finish(sub, error=error)


def _sampler_missing(sub: Submission, exc: APIStatusError) -> None:
    # asample says the sampling session is unknown or gone: the state decides (see
    # SamplerState.missing); a parked sample waits for the recovery actor, bounded.
    verdict, error = sub.state.missing(sub, exc)
    if verdict == "again":
        send_again(sub)
    elif verdict == "fail":
        finish(sub, error=error)
    elif sub.deadline is None:
        deadlines = sub.state.runtime.tenant.deadlines
        wait = deadlines.schedule(
            time.monotonic() + c.SAMPLE_REBIND_WAIT, functools.partial(_park_expired, sub)
        )
        sub.future.add_done_callback(lambda _: deadlines.cancel(wait))


def _park_expired(sub: Submission) -> None:
    if sub.state.unpark(sub):
        finish(sub, error=sub.state.not_rebound_error(sub))


# ---------------------------------------------------------------------------- results
def _deliver(sub: Submission, result: SampleResponse) -> None:
    result = result.check_honors(sub.request)
    ids = sub.sequence_ids
    finish(sub, result=result if ids is None else result.with_sequence_ids(ids))


def poll_singly(subs: list[Submission]) -> None:
    """Poll each of ``subs`` with its own ``retrieve_future`` long poll."""
    for sub in subs:
        _poll_singly(sub)


def _poll_singly(sub: Submission) -> None:
    try:
        sub.state.runtime.tenant.polls.execute(_poll_single, sub)
    except ClientClosedError as exc:
        finish(sub, error=exc)


def _poll_single(sub: Submission) -> None:
    """Polls lane: one long poll (or several) of ``sub``'s request until its result."""
    if sub.finished or sub.request_id is None:
        return
    _fetch(sub, metadata_known=False)


def _fetch(sub: Submission, *, metadata_known: bool = True) -> None:
    """Retrieve ``sub``'s result (after its completion was reported, or by long polling)."""
    state = sub.state
    request_id = sub.request_id
    if request_id is None:
        return
    try:
        if sub.finished:
            return  # timed out or closed meanwhile
        with state.blocking():
            result = poll_future(
                state.runtime,
                request_id,
                ep.ASAMPLE.response,
                request_type=ep.ASAMPLE.request_type,
                proto=True,
                tracker=state.tracker,
                deadline=sub.deadline,
                roundtrip=None if metadata_known else sub.roundtrip,
                is_closed=state.is_closed,
                metadata_known=metadata_known,
            )
        _deliver(sub, result)
    except GoneError as exc:
        _resubmit(sub, exc)
    except NotFoundError as exc:
        recovery = state.runtime.recovery
        if recovery is not None and recovery.policy.sessions:
            _resubmit(sub, exc)  # the server forgot the request (it lost its data)
        else:
            _failed(sub, exc)
    except Exception as exc:
        _failed(sub, exc)
    finally:
        if metadata_known and state.acknowledge(request_id):
            _start_poll_loop(state)


def _fetch_later(sub: Submission) -> None:
    try:
        sub.state.runtime.tenant.sampling.execute(_fetch, sub)
    except ClientClosedError as exc:
        finish(sub, error=exc)


# ---------------------------------------------------------------------------- batched polling
def _start_poll_loop(state: SamplerState) -> None:
    # Tell the SamplingActor to poll; if it cannot be told, poll the pending samples singly.
    from tinkex_actors.actors._sampling import request_poll

    if not request_poll(state):
        fall_back(state, "the sampling actor is not running")


def fall_back(state: SamplerState, why: str | None) -> None:
    """Give up batched polling for this client: its pending samples are polled singly, and so
    are later ones. ``why`` is logged (None: an expected switch, e.g. the actor stops)."""
    if state.batched and why is not None:
        state.logger("sampling").warning(
            "tinkex.sampling.batched_polling_off",
            reason=why[:300],
            hint="each pending sample is polled with retrieve_future instead",
        )
    state.batched = False
    for sub in state.take_pending():
        _poll_singly(sub)
    with state.lock:
        state.acks.clear()
        state.polling = False


def poll_completions(state: SamplerState) -> bool:
    """One ``retrieve_futures`` long poll for the session (the SamplingActor's thread).

    Hands every reported completion to the sampling lane to fetch, acknowledges what was
    fetched since the last poll, and copes with answers that name unknown ids (acknowledged),
    repeat or rewind the cursor (the pending samples are then polled singly, so nothing
    waits for a completion the server no longer reports). Returns True while there is more
    to poll for.
    """
    if state.is_closed():
        return False
    runtime = state.runtime
    with state.lock:
        acks = sorted(state.acks)
        waiting = bool(state.watched)
        cursor = state.cursor
        sampler_id = state.sampler_id
    body: dict[str, Any] = {
        "target": {
            "type": "sampling_session",
            "sampling_session_id": sampler_id,
            "cloned_sampler_id": state.clone_id,
        },
        "prev_cursor": cursor,
        "retrieved_request_ids": acks,
    }
    if not waiting:
        body["timeout"] = 0  # only acknowledgements to report: answer at once
    try:
        with state.blocking():
            response = runtime.transport.request(
                "POST",
                _RETRIEVE_FUTURES_PATH,
                body=orjson.dumps(body),
                timeout=runtime.config.poll_timeout if waiting else c.RETRIEVE_FUTURES_ACK_TIMEOUT,
                max_retries=0,
                idempotency_key=fast_key(),
            )
        completions, new_cursor = _read_completions(response)
    except TinkexError as exc:
        if state.sampler_id != sampler_id:
            return state.stop_polling_if_idle()  # re-created meanwhile: poll the new session
        return _poll_failed(state, exc)
    state.poll_failures = 0
    fetch: list[Submission] = []
    rewound: list[Submission] = []
    with state.lock:
        if state.sampler_id != sampler_id:
            # Re-created meanwhile: this answer is the old session's (its waiting samples
            # were handed to single polls by the rebind).
            completions, new_cursor = [], state.cursor
        state.acks.difference_update(acks)
        if new_cursor < cursor:
            rewound = list(state.watched.values())
            state.watched.clear()
        state.cursor = new_cursor
        for request_id in completions:
            sub = state.watched.pop(request_id, None)
            if sub is None:
                state.note_unknown(request_id)  # done, expired, repeated, or not read yet
            else:
                state.fetching.add(request_id)
                fetch.append(sub)
    if rewound:
        state.logger("sampling").warning(
            "tinkex.sampling.cursor_rewound",
            previous=cursor,
            cursor=new_cursor,
            repolled=len(rewound),
        )
    for sub in fetch:
        _fetch_later(sub)
    for sub in rewound:
        _poll_singly(sub)
    return state.stop_polling_if_idle()


def _read_completions(response: Response) -> tuple[list[str], int]:
    data = response.json()
    completions = data.get("completions") if isinstance(data, dict) else None
    cursor = data.get("cursor") if isinstance(data, dict) else None
    if (
        not isinstance(completions, list)
        or isinstance(cursor, bool)
        or not isinstance(cursor, int)
        or not all(
            isinstance(item, dict) and isinstance(item.get("request_id"), str)
            for item in completions
        )
    ):
        raise ResponseDecodeError(
            f"{response.method} {response.path}: not a retrieve_futures answer",
            body=response.content,
            expected='{"completions": [{"request_id": str, ...}], "cursor": int}',
            method=response.method,
            path=response.path,
        )
    return [item["request_id"] for item in completions], cursor


def _poll_failed(state: SamplerState, exc: TinkexError) -> bool:
    if state.is_closed():
        return False
    status = exc.status_code if isinstance(exc, APIStatusError) else None
    if status is not None:
        transient = status in (400, 408, 429) or status >= c.RETRYABLE_STATUS_FLOOR
    else:
        transient = isinstance(exc, APIConnectionError)
    if not transient:
        # 410 (the session is gone), 404 (no such endpoint or session), a garbled answer:
        # single polls still work (and report what happened to each request).
        fall_back(state, f"retrieve_futures failed: {exc}")
        return False
    state.poll_failures += 1
    if status == 400 and state.poll_failures > c.POLL_MAX_BAD_REQUEST_RETRIES:
        fall_back(state, f"retrieve_futures failed: {exc}")
        return False
    if status is None or status >= c.RETRYABLE_STATUS_FLOOR:
        # The server may have restarted and forgotten what it was to report: each request
        # watched now is polled singly and answers for itself (410: it is submitted again).
        for sub in state.take_pending():
            _poll_singly(sub)
    delay = POLL_POLICY.backoff(state.poll_failures - 1, random.random())
    state.logger("sampling").warning(
        "tinkex.sampling.poll_retry",
        reason=f"HTTP {status}" if status is not None else type(exc).__name__,
        delay_s=round(delay, 3),
    )
    return not state.wait(delay)
