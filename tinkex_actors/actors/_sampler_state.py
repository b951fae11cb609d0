"""A sampling client's state: its samples in flight, its queue and its session's poll cursor.

Kept outside the SamplingActor (so a restart keeps it) and shared with the lanes that work
for the client. All bookkeeping happens under one lock, held only for dict and deque
operations, never across I/O:

* ``inflight``: samples admitted (submitted or being submitted, result not yet in). At most
  ``bound``: ``Config.sample_max_inflight``, lowered by the server's
  ``sample_max_concurrent_requests``. A sample beyond it waits in ``queued``, which holds no
  thread; finishing a sample admits the next queued one.
* ``watched``: request id -> sample, for samples whose completion the session's batched poll
  will report (``retrieve_futures``). Whoever pops a sample from it (the poll, a fallback to
  single polls, a timeout) is the one who finishes it: no result is lost or delivered twice.
* ``early``: completions the poll reported before the submitting thread registered their
  sample (a fast server can finish a sample before its submission's answer is read). They
  are kept while submissions are under way (``submitting``), and claimed on registration;
  when none is under way, what is left is not ours to wait for and is acknowledged.
* ``acks``: ids whose results were fetched, reported on the next batched poll so the server
  may drop them; ``cursor``: the last cursor the server answered.
* ``parked``: samples whose sampling session the server no longer knows, waiting for the
  recovery actor to re-create it (:meth:`SamplerState.rebind` hands them back to be sent
  again) or to give up on it (:meth:`SamplerState.mark_lost` hands them back to be failed).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import sched
import threading
import time
from typing import Any, Literal

from tinkex_actors import _constants as c
from tinkex_actors import telemetry
from tinkex_actors.actors._base import ActorHandle
from tinkex_actors.actors._client_state import ClientState
from tinkex_actors.actors._lost import SamplerMissing, emit, notify
from tinkex_actors.actors._queue_state import QueueStateTracker
from tinkex_actors.actors._registry import SamplerSnapshot, samplers
from tinkex_actors.actors._runtime import Runtime
from tinkex_actors.errors import (
    APIStatusError,
    ClientClosedError,
    QueueFullError,
    SamplerLostError,
    TinkexError,
    TinkexTimeoutError,
    ValidationError,
)
from tinkex_actors.futures import ActorFuture
from tinkex_actors.types import SampleRequest, SampleResponse

__all__ = ["SamplerState", "Submission"]


class Submission:
    """One sample from ``sample()`` to its result.

    Attributes:
        state: its sampling client.
        future: what the caller holds.
        request: the validated request (its answer is checked against it).
        body: the asample JSON body without ``seq_id``.
        seq: its ``seq_id`` (a new one when the server expired the request, 410).
        key: the idempotency key of its submission (kept across resends after a 429).
        deadline: a ``time.monotonic()`` time after which it fails, or None.
        large: its prompt is estimated above 128 KiB (a 429 then backs off 5 s).
        request_id: the server's id once submitted.
        sequence_ids: ``sample_sequence_ids`` of the submission's answer.
        roundtrip: seconds the submission took (sent on the first single poll).
        sent_to: the sampling session its last submission named.
        resubmits: times it was submitted again after the server forgot it.
    """

    __slots__ = (
        "admitted",
        "body",
        "deadline",
        "finished",
        "future",
        "key",
        "large",
        "request",
        "request_id",
        "resubmits",
        "roundtrip",
        "sent_to",
        "seq",
        "sequence_ids",
        "state",
        "timer",
    )

    def __init__(
        self,
        state: SamplerState,
        future: ActorFuture[SampleResponse],
        request: SampleRequest,
        body: dict[str, Any],
        seq: int,
        key: str,
        deadline: float | None,
        large: bool,
    ) -> None:
        self.state = state
        self.future = future
        self.request = request
        self.body = body
        self.seq = seq
        self.key = key
        self.deadline = deadline
        self.large = large
        self.request_id: str | None = None
        self.sequence_ids: list[str] | None = None
        self.roundtrip: float | None = None
        self.timer: sched.Event | None = None
        self.admitted = False
        self.finished = False
        self.sent_to = ""
        self.resubmits = 0


class SamplerState(ClientState):
    """A sampling client's mutable runtime state (see the module docstring).

    Attributes:
        runtime: the ServiceClient tree's context.
        handle: the handle of the client's SamplingActor.
        key: the client's key in the sampler registry.
        seq: the ``seq_id`` counter (atomic).
        clone_id: ``seq_id // 1e9`` of this client's samples: 0 for an original client; for
            a client restored from a handle or a pickle, the server's ``client_counter`` or a
            random id in 1..1e9 (set once by :meth:`use_clone_id`, before its first sample).
        bound: samples in flight at most.
        batched: completions come from the session's batched poll (the server announced
            ``sample_use_retrieve_futures`` and it has not failed); else single polls.
    """

    def __init__(self, runtime: Runtime, handle: ActorHandle, key: int) -> None:
        super().__init__(runtime, handle)
        self.key = key
        self.clone_id = 0
        self.seq = itertools.count()
        self.tracker = QueueStateTracker("sampling", handle.name, runtime.config.tenant_id)
        announced = runtime.announced
        self.bound = max(
            1, min(runtime.config.sample_max_inflight, announced.sample_max_concurrent_requests)
        )
        self.batched = bool(announced.sample_use_retrieve_futures)
        self.lock = threading.Lock()
        self._room = threading.Condition(self.lock)
        self.inflight = 0
        self.queued: collections.deque[Submission] = collections.deque()
        self.watched: dict[str, Submission] = {}
        self.submitting = 0
        self.early: set[str] = set()
        # Reported complete and being fetched (acknowledged once fetched, never before).
        self.fetching: set[str] = set()
        self.acks: set[str] = set()
        self.cursor = 0
        self.polling = False
        self.poll_failures = 0
        self.parked: list[Submission] = []
        #: Set when the sampling session is gone for good: every sample fails with it.
        self.lost: SamplerLostError | None = None
        #: Whether the session can be created again from its source (a base model or a
        #: weights path); not a snapshot of a live adapter.
        self.recreatable = True

    @property
    def sampler_id(self) -> str:
        """The sampling session id on the server."""
        return self.handle.name

    def log_ids(self) -> dict[str, str]:
        """``sampler_id``."""
        return {"sampler_id": self.sampler_id}

    def use_clone_id(self, clone_id: int) -> None:
        """Number this client's ``seq_id`` s from ``clone_id * 1e9`` (a restored client; set
        before its first sample, so every seq_id it sends carries it)."""
        if clone_id < 0:
            raise ValidationError(f"a clone id is an int >= 0, got {clone_id!r}", field="clone_id")
        self.clone_id = clone_id

    def close(self) -> None:
        """Withdraw the snapshot, mark closed, cut this client's exchanges short and fail
        every sample still waiting (ClientClosedError)."""
        self.mark_closed()  # first: a concurrent rebind() then withdraws what it publishes
        samplers.withdraw(self.key)
        with self.lock:
            self.queued.clear()
            self.watched.clear()
            self.parked.clear()
            self._room.notify_all()
        self.fail_pending(ClientClosedError(f"the sampling client {self.handle.name} was closed"))

    def publish(self, sampler_id: str, base_model: str | None, model_path: str | None) -> None:
        """Publish the sampler's snapshot."""
        self.handle.name = sampler_id
        self.tracker.rename(sampler_id)
        samplers.publish(self.key, SamplerSnapshot(sampler_id, base_model, model_path, self))

    # ------------------------------------------------------------------ admission
    def admit(self, sub: Submission) -> bool:
        """Take an in-flight slot for ``sub`` (True), or queue it (False).

        Raises:
            QueueFullError: the queue is full and ``Config.sample_queue_full`` is "raise".
            TinkexTimeoutError: ... it is "wait" and ``sub``'s deadline passed first.
            ClientClosedError: the client closed while waiting for room.
        """
        config = self.runtime.config
        limit = config.sample_max_queued
        with self.lock:
            if self.inflight < self.bound:
                self.inflight += 1
                sub.admitted = True
                return True
            while limit is not None and len(self.queued) >= limit:
                if config.sample_queue_full == "raise":
                    raise QueueFullError(
                        f"sampling client {self.sampler_id}: {self.inflight} samples in flight "
                        f"(the bound) and {len(self.queued)} queued (Config.sample_max_queued)"
                    )
                if self.is_closed():
                    raise ClientClosedError(f"the sampling client {self.sampler_id} was closed")
                left = None if sub.deadline is None else sub.deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TinkexTimeoutError(
                        "the sample's timeout passed while waiting for room in the queue"
                    )
                self._room.wait(1.0 if left is None else min(left, 1.0))
            self.queued.append(sub)
            return False

    def settle(self, sub: Submission) -> Submission | None:
        """Mark ``sub`` finished and give its slot to the next queued sample (returned, to be
        dispatched by the caller). False-safe: only the first call for a sample counts."""
        with self.lock:
            if sub.finished:
                return None
            sub.finished = True
            if sub.request_id is not None:
                self.watched.pop(sub.request_id, None)
            if not sub.admitted:
                with contextlib.suppress(ValueError):  # already taken from the queue
                    self.queued.remove(sub)
                self._room.notify()
                return None
            self.inflight -= 1
            while self.queued:
                successor = self.queued.popleft()
                self._room.notify()
                if not successor.finished:
                    successor.admitted = True
                    self.inflight += 1
                    return successor
            return None

    # ------------------------------------------------------------------ batched polling
    def begin_submit(self) -> None:
        """A submission starts: completions of unknown ids may be its own (see ``early``)."""
        with self.lock:
            self.submitting += 1

    def end_submit(self) -> None:
        """A submission ended without registering a sample (failed, or polled singly)."""
        with self.lock:
            self.submitting -= 1
            self._settle_early()

    def watch(self, sub: Submission) -> tuple[bool, bool]:
        """Register ``sub`` (submitted) for the batched poll's report of its completion.

        Returns ``(start_polling, completed)``: whether the poll loop is idle and must be
        started (the caller tells the actor), and whether the poll already reported it (the
        caller fetches the result now).
        """
        assert sub.request_id is not None
        with self.lock:
            self.submitting -= 1
            completed = sub.request_id in self.early
            if completed:
                self.early.discard(sub.request_id)
            elif sub.finished:
                self.acks.add(sub.request_id)  # timed out meanwhile: let the server drop it
            else:
                self.watched[sub.request_id] = sub
            self._settle_early()
            return self._start_polling(), completed

    def note_unknown(self, request_id: str) -> None:
        """A completion for no registered sample (call with the lock held): being fetched
        already (a repeated report: ignored), maybe one whose submission is still being read,
        else not ours to wait for (acknowledged)."""
        if request_id in self.fetching:
            return
        if self.submitting:
            self.early.add(request_id)
        else:
            self.acks.add(request_id)

    def _settle_early(self) -> None:
        # Called with the lock held: no submission under way, so nothing left in ``early``
        # can still be claimed.
        if not self.submitting and self.early:
            self.acks |= self.early
            self.early.clear()

    def acknowledge(self, request_id: str) -> bool:
        """Report ``request_id`` as retrieved on the next poll; True when the poll loop is
        idle and must be started."""
        with self.lock:
            self.fetching.discard(request_id)
            if not self.batched:
                return False  # batched polling failed: nobody to tell
            self.acks.add(request_id)
            return self._start_polling()

    def _start_polling(self) -> bool:
        # Called with the lock held.
        if self.polling or self.closed or not (self.watched or self.acks):
            return False
        self.polling = True
        return True

    def stop_polling_if_idle(self) -> bool:
        """End the poll loop when nothing is left to poll for; True when it must go on."""
        with self.lock:
            if (self.watched or self.acks) and not self.closed:
                return True
            self.polling = False
            return False

    def take_pending(self) -> list[Submission]:
        """Stop watching every pending sample and return them (to be polled singly)."""
        with self.lock:
            taken = list(self.watched.values())
            self.watched.clear()
            return taken

    # ------------------------------------------------------------------ recovery
    def missing(
        self, sub: Submission, answer: APIStatusError
    ) -> tuple[Literal["parked", "again", "fail"], TinkexError | None]:
        """``sub``'s ``asample`` said its sampling session is unknown or gone. Decide: park it
        for the recovery actor (which re-creates the session and sends it again, or fails
        it), send it again at once (the session was re-created meanwhile), or fail it (with
        the error returned: session recovery is off, the session is lost, the sample was
        sent again too often, or the client is closing)."""
        sampler_id = sub.sent_to
        reason = answer.body or str(answer)
        recovery = self.runtime.recovery
        if recovery is None or not recovery.policy.sessions:
            error = SamplerLostError(
                f"the sampling session {sampler_id} is gone from the server ({reason[:200]}) "
                "and session recovery is off: create a new sampling client",
                sampler_id=sampler_id,
                reason=reason,
            )
            if self.mark_lost(error) == [] and self.lost is error:  # nothing parks without it
                emit(
                    self.runtime,
                    telemetry.RECOVERY_SAMPLER_FAILED,
                    "tinkex.recovery.sampler_failed",
                    "error",
                    sampler_id=sampler_id,
                    reason=f"session recovery is off: {reason[:200]}",
                )
            return "fail", self.lost or error
        if sub.resubmits >= c.SAMPLE_MAX_RESUBMITS:
            return "fail", answer
        if not self.park(sub):
            return ("fail", self.lost) if self.lost is not None else ("again", None)
        if not notify(self.runtime, SamplerMissing(self, sampler_id, reason)):
            if self.unpark(sub):
                return "fail", ClientClosedError(f"the sampling client {sampler_id} was closed")
            return "again", None  # rebound just now
        return "parked", None

    def not_rebound_error(self, sub: Submission) -> SamplerLostError:
        """The error of a parked sample whose session was not re-created in time."""
        return SamplerLostError(
            f"the sampling session {sub.sent_to} was not re-created within "
            f"{c.SAMPLE_REBIND_WAIT:g} s",
            sampler_id=sub.sent_to,
        )

    def park(self, sub: Submission) -> bool:
        """Hold ``sub`` until its sampling session is re-created. False when the session it
        named was replaced meanwhile (send it again) or is lost (fail it)."""
        with self.lock:
            if sub.sent_to != self.handle.name or self.lost is not None or self.closed:
                return False
            self.parked.append(sub)
            return True

    def unpark(self, sub: Submission) -> bool:
        """Take ``sub`` out of the parked samples; False if it was not there."""
        with self.lock:
            try:
                self.parked.remove(sub)
            except ValueError:
                return False
            return True

    def rebind(
        self, sampler_id: str, base_model: str | None, model_path: str | None
    ) -> tuple[list[Submission], list[Submission]]:
        """Switch to the new sampling session ``sampler_id``. Returns the parked samples (to
        be sent again) and the ones the batched poll was waiting for (to be polled singly:
        the new session's poll does not report the old one's requests)."""
        with self.lock:
            self.publish(sampler_id, base_model, model_path)
            parked, self.parked = self.parked, []
            watched = list(self.watched.values())
            self.watched.clear()
            self.acks.clear()
            self.cursor = 0
            self.poll_failures = 0
            self.batched = bool(self.runtime.announced.sample_use_retrieve_futures)
        if self.closed:
            samplers.withdraw(self.key)  # closed meanwhile: publish nothing
        return parked, watched

    def mark_lost(self, error: SamplerLostError) -> list[Submission]:
        """The sampling session is gone for good; returns the parked samples (to be failed)."""
        with self.lock:
            if self.lost is None:
                self.lost = error
            parked, self.parked = self.parked, []
            return parked
