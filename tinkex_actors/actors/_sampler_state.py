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
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import sched
import threading
import time
from typing import Any

from tinkex_actors.actors._base import ActorHandle
from tinkex_actors.actors._client_state import ClientState
from tinkex_actors.actors._queue_state import QueueStateTracker
from tinkex_actors.actors._registry import SamplerSnapshot, samplers
from tinkex_actors.actors._runtime import Runtime
from tinkex_actors.errors import (
    ClientClosedError,
    QueueFullError,
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
        "roundtrip",
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

    @property
    def sampler_id(self) -> str:
        """The sampling session id on the server."""
        return self.handle.name

    def use_clone_id(self, clone_id: int) -> None:
        """Number this client's ``seq_id`` s from ``clone_id * 1e9`` (a restored client; set
        before its first sample, so every seq_id it sends carries it)."""
        if clone_id < 0:
            raise ValidationError(f"a clone id is an int >= 0, got {clone_id!r}", field="clone_id")
        self.clone_id = clone_id

    def close(self) -> None:
        """Withdraw the snapshot, mark closed, cut this client's exchanges short and fail
        every sample still waiting (ClientClosedError)."""
        samplers.withdraw(self.key)
        self.mark_closed()
        with self.lock:
            self.queued.clear()
            self.watched.clear()
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
