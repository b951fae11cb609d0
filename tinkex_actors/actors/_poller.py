"""Polling ``retrieve_future`` until a request's result is there (protocol §3.7, §5.3).

:func:`poll_future` runs on a worker-pool thread and blocks in the server's long poll. It
reacts to each answer as the official SDK does:

================================  ==========================================================
answer                            action
================================  ==========================================================
200 result                        return it (protobuf for ForwardBackwardOutput and
                                  SampleResponse, JSON otherwise)
200 ``try_again``                 report the queue state, poll again at once (the server
                                  long-polls)
200 ``complete_metadata``         poll again with ``allow_metadata_only`` false
200 ``{"error", "category"}``     raise :class:`RequestFailedError` (the category kept)
408                               poll again at once (body may carry a queue state)
5xx                               poll again at once, backing off after a few in a row
410                               raise :class:`GoneError` (the promise expired: training
                                  calls fail, samples are re-submitted)
429, connection errors, timeouts  back off ``min(2**n, 30)`` s (n = consecutive, jittered by
                                  :data:`~tinkex_actors.transport.POLL_POLICY`), poll again
400                               up to 3 immediate retries, then raise BadRequestError
402                               wait 5 s between polls, up to the billing pause window
other 4xx                         raise the typed status error
================================  ==========================================================

Every poll has a read timeout of ``Config.poll_timeout`` (45 s), shortened to what is left of
an optional overall ``deadline``; when the deadline passes the poll fails with
:class:`TinkexTimeoutError`. A closed client stops polling with ``ClientClosedError``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Final, TypeVar

import orjson

from tinkex_actors import _constants as c
from tinkex_actors import _endpoints as ep
from tinkex_actors.actors._queue_state import ACTIVE, QueueStateTracker
from tinkex_actors.actors._runtime import Runtime
from tinkex_actors.errors import (
    APIConnectionError,
    APIStatusError,
    ClientClosedError,
    RequestFailedError,
    ResponseDecodeError,
    TinkexError,
    TinkexTimeoutError,
)
from tinkex_actors.transport import POLL_POLICY, Response
from tinkex_actors.types import (
    FutureMetadataResponse,
    RequestFailedResponse,
    TryAgainResponse,
)
from tinkex_actors.wire import decode_future_answer

__all__ = ["UntypedFuture", "fast_key", "poll_future", "untyped_future"]

T = TypeVar("T")

_RETRIEVE_PATH: Final = ep.RETRIEVE_FUTURE.path()


def fast_key() -> str:
    """An idempotency key without a syscall.

    ``os.urandom`` (the transport's default) releases the GIL, and under fan-out every GIL
    release costs a contended re-acquire. Keys need uniqueness, not secrecy: 128 bits from
    the process's Mersenne Twister (seeded from the OS, re-seeded in forked children).
    """
    return f"{c.IDEMPOTENCY_KEY_PREFIX}{random.getrandbits(128):032x}"


class UntypedFuture:
    """The immediate answer of a queued request: its id and (asample) its sequence ids."""

    __slots__ = ("model_id", "request_id", "sample_sequence_ids")

    def __init__(
        self, request_id: str, model_id: str | None, sample_sequence_ids: list[str] | None
    ) -> None:
        self.request_id = request_id
        self.model_id = model_id
        self.sample_sequence_ids = sample_sequence_ids


def untyped_future(response: Response) -> UntypedFuture:
    """Read ``{"request_id", "model_id"?, "sample_sequence_ids"?}`` from a 2xx answer.

    Raises:
        ResponseDecodeError: the body is not such an object (``request_id`` must be a string).
    """
    data = response.json()
    request_id = data.get("request_id") if isinstance(data, dict) else None
    if not isinstance(request_id, str) or not request_id:
        raise ResponseDecodeError(
            f"{response.method} {response.path}: no string request_id in the answer",
            body=response.content,
            expected="an untyped future {request_id: str}",
            method=response.method,
            path=response.path,
        )
    model_id = data.get("model_id")
    ids = data.get("sample_sequence_ids")
    if ids is not None and (
        not isinstance(ids, list) or not all(isinstance(item, str) for item in ids)
    ):
        raise ResponseDecodeError(
            f"{response.method} {response.path}: sample_sequence_ids is not a list of strings",
            body=response.content,
            expected="sample_sequence_ids: [str]",
            method=response.method,
            path=response.path,
        )
    return UntypedFuture(request_id, model_id if isinstance(model_id, str) else None, ids)


def _queue_state_of(body: str) -> tuple[str, str | None] | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(data, dict) and isinstance(data.get("queue_state"), str):
        reason = data.get("queue_state_reason")
        return data["queue_state"], reason if isinstance(reason, str) else None
    return None


def poll_future(
    runtime: Runtime,
    request_id: str,
    expected: type[T],
    *,
    request_type: str,
    proto: bool,
    tracker: QueueStateTracker | None = None,
    deadline: float | None = None,
    roundtrip: float | None = None,
    is_closed: Callable[[], bool] | None = None,
    metadata_known: bool = False,
) -> T:
    """Poll ``request_id`` until its result (of type ``expected``) arrives.

    Args:
        runtime: the client tree's context (transport, poll timeout, close flag).
        request_id: the id the submission answered with.
        expected: the result type.
        request_type: ``X-Tinker-Request-Type`` (``"ForwardBackward"``, ``"Sample"``, ...).
        proto: ask for protobuf (ForwardBackwardOutput, SampleResponse).
        tracker: receives queue-state changes.
        deadline: a ``time.monotonic()`` time after which polling fails.
        roundtrip: seconds the submission took (``X-Tinker-Create-Promise-Roundtrip-Time``
            on the first poll).
        is_closed: a callable returning True once the caller's client closed (default: the
            runtime's flag).
        metadata_known: the completion was already reported (``retrieve_futures``): ask for
            the payload at once (``allow_metadata_only`` false from the first poll).

    Raises:
        RequestFailedError: the server ran the request and it failed.
        GoneError: the promise expired (410).
        TinkexTimeoutError: ``deadline`` passed.
        ClientClosedError: the client closed.
        APIStatusError / ResponseDecodeError: a fatal answer.
    """
    closed = runtime.is_closed if is_closed is None else is_closed
    transport = runtime.transport
    poll_timeout = runtime.config.poll_timeout
    accept = c.CONTENT_PROTOBUF if proto else c.CONTENT_JSON
    billing_window = float(runtime.announced.billing_exception_max_pause_duration_sec)
    iteration = 0
    allow_metadata = not metadata_known
    backoffs = 0  # consecutive connection-type failures (connection errors, timeouts, 429)
    server_errors = 0  # consecutive 5xx
    bad_requests = 0
    first_billing: float | None = None
    last_error: TinkexError | None = None
    while True:
        if closed():
            raise ClientClosedError("the client was closed while its request was polled")
        timeout = poll_timeout
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TinkexTimeoutError(
                    f"no result for request {request_id} before the call's deadline"
                ) from last_error
            timeout = max(min(timeout, left), c.POLL_MIN_TIMEOUT)
        headers = None
        if iteration == 0 and roundtrip is not None:
            headers = {c.HEADER_PROMISE_ROUNDTRIP: f"{roundtrip:.6f}"}
        body = orjson.dumps({"request_id": request_id, "allow_metadata_only": allow_metadata})
        delay = 0.0
        try:
            response = transport.request(
                "POST",
                _RETRIEVE_PATH,
                body=body,
                accept=accept,
                headers=headers,
                timeout=timeout,
                max_retries=0,
                request_type=request_type,
                iteration=iteration,
                idempotency_key=fast_key(),
            )
        except APIConnectionError as exc:  # timeouts included
            last_error = exc
            delay = POLL_POLICY.backoff(backoffs, random.random())
            backoffs += 1
        except APIStatusError as exc:
            last_error = exc
            status = exc.status_code
            if status == 429:
                delay = POLL_POLICY.backoff(backoffs, random.random())
                backoffs += 1
            else:
                backoffs = 0
                if status == 408:
                    state = _queue_state_of(exc.body)
                    if state is not None:
                        bad_requests = 0
                        if tracker is not None:
                            tracker.update(*state)
                elif status >= 500:
                    server_errors += 1
                    if server_errors > c.POLL_IMMEDIATE_5XX:
                        retry = server_errors - c.POLL_IMMEDIATE_5XX - 1
                        delay = POLL_POLICY.backoff(retry, random.random())
                elif status == 400:
                    bad_requests += 1
                    if bad_requests > c.POLL_MAX_BAD_REQUEST_RETRIES:
                        raise
                elif status == 402:
                    now = time.monotonic()
                    first_billing = first_billing or now
                    if now - first_billing >= billing_window:
                        raise
                    delay = c.POLL_BILLING_DELAY
                else:
                    raise  # 410 and the other 4xx: fatal, typed by status
        else:
            backoffs = server_errors = 0
            first_billing = None
            answer = decode_future_answer(
                expected, response.content, response.header("content-type")
            )
            if isinstance(answer, TryAgainResponse):
                if tracker is not None:
                    tracker.update(answer.queue_state, answer.queue_state_reason)
            elif isinstance(answer, FutureMetadataResponse):
                allow_metadata = False
            elif isinstance(answer, RequestFailedResponse):
                if tracker is not None:
                    tracker.update(ACTIVE)
                raise RequestFailedError(
                    answer.error, category=answer.category, request_id=request_id
                )
            else:
                if tracker is not None and tracker.state != ACTIVE:
                    tracker.update(ACTIVE)
                return answer
        iteration += 1
        if delay and runtime.wait(delay) and closed():
            raise ClientClosedError("the client was closed while its request was polled")
