"""The actor plumbing every tinkex_actors actor shares: calls, handles, let-it-crash.

* A :class:`Call` is a message carrying the caller's :class:`ActorFuture`. Calls are sent
  with pykka's ``tell`` (never ``ask``): the actor completes the future itself (at once, or
  later from a worker), and an unexpected exception leaves ``on_receive`` so that pykka
  stops the actor and calls ``on_failure`` ("let it crash").
* An :class:`ActorHandle` is what a facade holds: the *current* actor of one client. The
  supervisor re-points it when the actor is restarted, marks it failed when the restart
  intensity is exceeded, and closes it on shutdown.
* :class:`ChildActor` is the base of TrainingActor and SamplingActor: daemon thread, call
  dispatch, expected errors to the caller's future, unexpected ones crash the actor, and no
  call is ever left pending when the actor dies (see :meth:`ActorHandle.send`).

Why a claim lock per call: a call put into a mailbox just as its actor stops could otherwise
be dropped unanswered by pykka's teardown. Whoever claims a call first (the actor about to run
it, the dying actor draining its mailbox, or the sender noticing the actor stopped) answers
it; everyone else leaves it alone.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, ClassVar

import pykka

from tinkex_actors import _constants as c
from tinkex_actors._logging import get_logger
from tinkex_actors.errors import (
    ActorCrashedError,
    ChildFailedError,
    ClientClosedError,
    TinkexError,
)
from tinkex_actors.futures import ActorFuture

__all__ = ["ActorHandle", "Call", "ChildActor", "ChildCrashed", "Crash"]

_handle_ids = itertools.count(1)


class Call:
    """A message: run ``fn(actor, *args, future)`` in the actor's thread.

    ``fn`` completes ``future`` itself (directly, or by handing it to a worker task) and
    returns nothing. A :class:`~tinkex_actors.errors.TinkexError` it raises goes to the future.
    """

    __slots__ = ("_claim", "args", "fn", "future")

    def __init__(
        self, fn: Callable[..., None], args: tuple[Any, ...], future: ActorFuture[Any]
    ) -> None:
        self.fn = fn
        self.args = args
        self.future = future
        self._claim = threading.Lock()

    def claim(self) -> bool:
        """Take responsibility for answering this call; False if someone already did."""
        return self._claim.acquire(False)


class Crash:
    """A message that makes the actor crash with ``error`` (escalated from a worker task)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class ChildCrashed:
    """Sent by a crashed child to its supervisor.

    ``backlog`` holds the calls that were still queued (never started): the replacement
    actor runs them, in order, before anything sent later.
    """

    __slots__ = ("backlog", "error", "generation", "handle")

    def __init__(
        self,
        handle: ActorHandle,
        generation: int,
        error: BaseException | None,
        backlog: list[Call],
    ) -> None:
        self.handle = handle
        self.generation = generation
        self.error = error
        self.backlog = backlog


class ActorHandle:
    """The current actor of one client, as its facade sees it. Thread-safe.

    Args:
        kind: ``"training"`` or ``"sampling"`` (for messages).
        name: a short description (model id or sampler id) for messages and logs.
    """

    def __init__(self, kind: str, name: str) -> None:
        self.id = next(_handle_ids)
        self.kind = kind
        self.name = name
        self.generation = 0
        self.failure: ChildFailedError | None = None
        self.closed = False
        self.thread: threading.Thread | None = None
        self._ref: pykka.ActorRef[Any] | None = None
        self._cond = threading.Condition(threading.Lock())
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ supervisor side
    def point_to(self, ref: pykka.ActorRef[Any], thread: threading.Thread) -> int:
        """Make ``ref`` the current actor (a start or a restart); returns its generation."""
        with self._cond:
            self._ref = ref
            self.thread = thread
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
            self.generation += 1
            self._cond.notify_all()
            return self.generation

    def fail(self, error: ChildFailedError) -> None:
        """Mark the client failed for good: every later call raises ``error``."""
        with self._cond:
            if self.failure is None and not self.closed:
                self.failure = error
            self._cond.notify_all()

    def close(self) -> pykka.ActorRef[Any] | None:
        """Mark the client closed (later calls raise ClientClosedError); returns its actor."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()
            return self._ref

    @property
    def ref(self) -> pykka.ActorRef[Any] | None:
        """The current actor's ref (None before the first start)."""
        return self._ref

    def threads(self) -> list[threading.Thread]:
        """Every thread this handle's actors ran on (for joining at close)."""
        with self._cond:
            return list(self._threads)

    # ------------------------------------------------------------------ caller side
    def gone_error(self) -> TinkexError:
        """The error for a call that cannot be delivered now."""
        if self.closed:
            return ClientClosedError(f"the {self.kind} client {self.name} was closed")
        if self.failure is not None:
            return self.failure
        return ActorCrashedError(
            f"the actor of {self.kind} client {self.name} crashed before it took this call"
        )

    def check(self) -> None:
        """Raise at once if the client is closed or failed."""
        if self.closed or self.failure is not None:
            raise self.gone_error()

    def send(self, call: Call) -> None:
        """Deliver ``call`` to the current actor.

        If the actor crashed and is being restarted, wait (up to ``ACTOR_RESTART_WAIT``) for
        the replacement. A call that reached a dying actor's mailbox is answered with
        :class:`ActorCrashedError` (or ClientClosedError) rather than dropped.

        Raises:
            ClientClosedError: the client is closed.
            ChildFailedError: the client failed (restart intensity exceeded).
            ActorCrashedError: no replacement came in time.
        """
        while True:
            if self.closed or self.failure is not None:
                raise self.gone_error()
            generation = self.generation
            ref = self._ref
            if ref is not None:
                try:
                    ref.tell(call)
                except pykka.ActorDeadError:
                    pass
                else:
                    if not ref.actor_stopped.is_set():
                        return
                    # It reached a stopping actor, which takes no more calls. Whoever claims
                    # it first answers it: if we do, deliver it to the replacement.
                    if not call.claim():
                        return
                    call = Call(call.fn, call.args, call.future)
            with self._cond:
                if self._waiting_on(generation):
                    self._cond.wait(c.ACTOR_RESTART_WAIT)
                if self._waiting_on(generation):
                    raise ActorCrashedError(
                        f"the actor of {self.kind} client {self.name} crashed and no replacement "
                        f"started within {c.ACTOR_RESTART_WAIT} s"
                    )

    def _waiting_on(self, generation: int) -> bool:
        # Still no replacement for the actor of ``generation`` (and no final verdict).
        return self.generation == generation and not self.closed and self.failure is None

    def send_crash(self, message: Crash) -> None:
        """Tell the current actor to crash (an escalated worker error). Never raises."""
        ref = self._ref
        if ref is None or self.closed or self.failure is not None:
            return
        # Already dead: its supervisor is on it.
        with contextlib.suppress(pykka.ActorDeadError):
            ref.tell(message)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "failed" if self.failure else "open"
        return f"ActorHandle({self.kind} {self.name}, generation={self.generation}, {state})"


class ChildActor(pykka.ThreadingActor):
    """Base of the supervised client actors.

    Args:
        handle: the handle facades use to reach this client.
        supervisor: the ServiceActor's ref (told about crashes).
    """

    use_daemon_thread: ClassVar[bool] = True

    def __init__(
        self,
        handle: ActorHandle,
        supervisor: pykka.ActorRef[Any] | None,
        backlog: list[Call] | None = None,
    ) -> None:
        super().__init__()
        self.handle = handle
        self.supervisor = supervisor
        self.generation = 0
        # A crashed predecessor's unstarted calls go first, before the handle points here.
        for call in backlog or ():
            self.actor_ref.tell(call)

    # pykka starts the thread here (after registering the actor). Overridden to point the
    # handle at this actor and to keep the thread, which pykka does not expose, so close()
    # can join it.
    def _start_actor_loop(self) -> None:
        thread = threading.Thread(
            target=self._actor_loop,
            name=f"tinkex-{type(self).__name__}-{self.handle.id}",
            daemon=True,
        )
        self.generation = self.handle.point_to(self.actor_ref, thread)
        thread.start()

    def on_receive(self, message: Any) -> Any:
        """Run a :class:`Call`; crash on :class:`Crash` or on an unexpected exception."""
        if isinstance(message, Call):
            if not message.claim():
                return None  # already answered (the client closed meanwhile)
            future = message.future
            if future.done():
                return None  # failed by close(): nothing to send
            try:
                message.fn(self, *message.args, future)
            except TinkexError as exc:
                future.set_exception(exc)
            except Exception as exc:
                future.set_exception(self.crashed_error(exc))
                raise
            except BaseException as exc:
                # SystemExit & co. would make pykka stop every actor in the process.
                future.set_exception(self.crashed_error(exc))
                raise self.crashed_error(exc) from exc
            return None
        if isinstance(message, Crash):
            raise message.error  # escalated from a worker: crash with it
        return super().on_receive(message)

    def crashed_error(self, exc: BaseException) -> ActorCrashedError:
        """The error a caller gets when this actor crashes on its call."""
        error = ActorCrashedError(
            f"the actor of {self.handle.kind} client {self.handle.name} crashed "
            f"({type(exc).__name__}: {exc}); it is being restarted"
        )
        error.__cause__ = exc
        return error

    def _drain(self) -> list[Call]:
        # Take every unanswered call out of the mailbox (pykka's teardown would drop them),
        # as fresh unclaimed copies.
        calls: list[Call] = []
        inbox = self.actor_inbox
        # Only this (the actor's own) thread takes from its inbox, so get() cannot block here.
        while not inbox.empty():
            message = inbox.get().message
            if isinstance(message, Call) and message.claim():
                calls.append(Call(message.fn, message.args, message.future))
        return calls

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Tell the supervisor, handing it the queued calls (the replacement runs them)."""
        handle = self.handle
        backlog = self._drain()
        supervisor = self.supervisor
        if supervisor is not None:
            try:
                supervisor.tell(ChildCrashed(handle, self.generation, exception_value, backlog))
                return
            except pykka.ActorDeadError:
                pass
        get_logger("supervisor").error(
            "tinkex.actor.no_supervisor", client=handle.kind, id=handle.name
        )
        handle.fail(
            ChildFailedError(
                f"the actor of {handle.kind} client {handle.name} crashed and its supervisor "
                "is gone (the ServiceClient closed or failed)"
            )
        )
        for call in backlog:
            call.future.set_exception(handle.gone_error())

    def on_stop(self) -> None:
        """Fail the queued calls (the client closed or was released)."""
        for call in self._drain():
            call.future.set_exception(self.handle.gone_error())
