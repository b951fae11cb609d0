"""The actor plumbing every tinkex_actors actor shares: calls, handles, let-it-crash.

* A :class:`Call` is a piece of work for one client's actor, carrying the caller's
  :class:`ActorFuture`: the actor completes the future itself (at once, or later from a
  worker), and an unexpected exception crashes the actor ("let it crash").
* An :class:`ActorHandle` is what a facade holds: the *current* actor of one client, and the
  client's queue of calls. The supervisor re-points it when the actor is restarted, marks it
  failed when the restart intensity is exceeded, and closes it on shutdown.
* :class:`ChildActor` is the base of every actor here: daemon thread, call dispatch,
  expected errors to the caller's future, unexpected ones crash the actor.

Why the calls wait in the handle, not in pykka's mailbox: the queue must outlive an actor that
crashes, so that its replacement runs the calls still waiting, in order, and none is lost or
answered twice. The handle keeps them in a deque under its lock; the actor's mailbox only
carries :data:`WAKE` ("a call is waiting"), so pykka is used through its public API alone
(``ThreadingActor``, ``ActorRef.tell``/``stop``/``actor_stopped``, ``on_receive``,
``on_failure``, ``on_stop``). Whoever takes a call out of the deque (the running actor, or a
close or failure answering what is left) is the only one to answer it.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, ClassVar, Final

import pykka

from tinkex_actors._logging import get_logger
from tinkex_actors.errors import (
    ActorCrashedError,
    ChildFailedError,
    ClientClosedError,
    TinkexError,
)
from tinkex_actors.futures import ActorFuture

__all__ = ["WAKE", "ActorHandle", "Call", "ChildActor", "ChildCrashed", "Crash"]

_handle_ids = itertools.count(1)


class Call:
    """Work for an actor: run ``fn(actor, *args, future)`` in the actor's thread.

    ``fn`` completes ``future`` itself (directly, or by handing it to a worker task) and
    returns nothing. A :class:`~tinkex_actors.errors.TinkexError` it raises goes to the future.
    """

    __slots__ = ("args", "fn", "future")

    def __init__(
        self, fn: Callable[..., None], args: tuple[Any, ...], future: ActorFuture[Any]
    ) -> None:
        self.fn = fn
        self.args = args
        self.future = future


class _Wake:
    __slots__ = ()

    def __repr__(self) -> str:
        return "WAKE"


#: The mailbox message that makes an actor run the oldest call waiting in its handle.
WAKE: Final = _Wake()


class Crash:
    """A message that makes the actor crash with ``error`` (escalated from a worker task)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class ChildCrashed:
    """Sent by a crashed child to its supervisor (its waiting calls stay in its handle)."""

    __slots__ = ("error", "generation", "handle")

    def __init__(self, handle: ActorHandle, generation: int, error: BaseException | None) -> None:
        self.handle = handle
        self.generation = generation
        self.error = error


class ActorHandle:
    """The current actor of one client, and the client's queue of calls. Thread-safe.

    Args:
        kind: ``"training"``, ``"sampling"``, ``"service"``... (for messages).
        name: a short description (model id or sampler id) for messages and logs.
    """

    def __init__(self, kind: str, name: str) -> None:
        self.id = next(_handle_ids)
        self.kind = kind
        self.name = name
        self.generation = 0
        self.failure: ChildFailedError | None = None
        self.closed = False
        self._ref: pykka.ActorRef[Any] | None = None
        self._refs: list[pykka.ActorRef[Any]] = []
        #: Idents of the threads its actors ran on (a thread never waits for its own stop).
        self.thread_idents: set[int] = set()
        self._calls: collections.deque[Call] = collections.deque()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ supervisor side
    def point_to(self, ref: pykka.ActorRef[Any]) -> int:
        """Make ``ref`` the current actor (a start or a restart); returns its generation.

        The new actor is woken once per call still waiting (a crashed predecessor's).
        """
        with self._lock:
            self._ref = ref
            self._refs = [r for r in self._refs if not r.actor_stopped.is_set()]
            self._refs.append(ref)
            self.generation += 1
            waiting = len(self._calls)
            generation = self.generation
        for _ in range(waiting):
            ref.tell(WAKE)
        return generation

    def fail(self, error: ChildFailedError) -> None:
        """Mark the client failed for good: every later call, and every waiting one, gets
        ``error``."""
        with self._lock:
            if self.failure is None and not self.closed:
                self.failure = error
        self.answer_waiting(self.gone_error())

    def close(self) -> pykka.ActorRef[Any] | None:
        """Mark the client closed (later calls raise ClientClosedError); returns its actor.
        Waiting calls are answered with ClientClosedError."""
        with self._lock:
            self.closed = True
            ref = self._ref
        self.answer_waiting(self.gone_error())
        return ref

    def answer_waiting(self, error: TinkexError) -> None:
        """Fail every call still waiting (none will run)."""
        while (call := self.take()) is not None:
            call.future.set_exception(error)

    @property
    def ref(self) -> pykka.ActorRef[Any] | None:
        """The current actor's ref (None before the first start)."""
        return self._ref

    def wait_stopped(self, deadline: float) -> bool:
        """Wait until every actor this handle pointed to has stopped, or the monotonic time
        ``deadline`` passed; True when they all stopped. From one of those actors' own
        threads (a close run by a callback) nothing is waited for."""
        if threading.get_ident() in self.thread_idents:
            return False
        with self._lock:
            refs = list(self._refs)
        return all(ref.actor_stopped.wait(max(0.0, deadline - time.monotonic())) for ref in refs)

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
        """Queue ``call`` for the current actor (or, while it is being restarted, for its
        replacement, which runs the waiting calls first, in order).

        Raises:
            ClientClosedError: the client is closed.
            ChildFailedError: the client failed (restart intensity exceeded).
        """
        with self._lock:
            if self.closed or self.failure is not None:
                raise self.gone_error()
            self._calls.append(call)
            ref = self._ref
        if ref is not None:
            # Dead: a replacement is coming (and is woken for what waits), or the client is
            # failed or closed (and what waits is answered).
            with contextlib.suppress(pykka.ActorDeadError):
                ref.tell(WAKE)

    def take(self) -> Call | None:
        """The oldest waiting call, now the taker's to answer (None when none waits)."""
        with self._lock:
            return self._calls.popleft() if self._calls else None

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

    def __init__(self, handle: ActorHandle, supervisor: pykka.ActorRef[Any] | None) -> None:
        super().__init__()
        self.handle = handle
        self.supervisor = supervisor
        # Runs in the starting thread, before pykka starts this actor's: calls sent from now
        # on reach this actor's mailbox (they queue until its thread runs).
        self.generation = handle.point_to(self.actor_ref)

    def on_start(self) -> None:
        """Note this actor's thread in the handle (nothing here can fail: a failure in
        ``on_start`` would bypass ``on_failure``)."""
        self.handle.thread_idents.add(threading.get_ident())

    def on_receive(self, message: Any) -> Any:
        """Run the oldest waiting :class:`Call` on :data:`WAKE`; crash on :class:`Crash`."""
        if message is WAKE:
            call = self.handle.take()
            if call is None or call.future.done():
                return None  # answered already (a close, a timeout)
            future = call.future
            try:
                call.fn(self, *call.args, future)
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

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Tell the supervisor (the calls still waiting stay in the handle for the
        replacement); without one, the client is failed and its waiting calls answered."""
        handle = self.handle
        supervisor = self.supervisor
        if supervisor is not None:
            try:
                supervisor.tell(ChildCrashed(handle, self.generation, exception_value))
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

    def on_stop(self) -> None:
        """Answer the calls still waiting: the client was closed or released (a crashed
        actor does not come through here; its calls wait for the replacement)."""
        handle = self.handle
        handle.answer_waiting(
            handle.gone_error()
            if handle.closed or handle.failure is not None
            else ClientClosedError(f"the {handle.kind} client {handle.name} was released")
        )
