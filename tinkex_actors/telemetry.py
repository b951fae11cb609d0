"""In-process instrumentation events, in the style of Erlang's ``:telemetry``.

The library *emits* events; applications *attach* handlers to the ones they care about::

    from tinkex_actors import telemetry

    def on_stop(event, measurements, metadata, config):
        histogram.observe(measurements["duration"] / 1e9, labels={"path": metadata["path"]})

    telemetry.attach("metrics", telemetry.HTTP_REQUEST_STOP, on_stop)
    ...
    telemetry.detach("metrics")

An event name is a tuple of strings. A handler is called as
``fn(event, measurements, metadata, config)`` where ``measurements`` maps names to numbers,
``metadata`` maps names to values (read-only) and ``config`` is what was passed to
:func:`attach`. Times are integers in nanoseconds: ``monotonic_time`` (``time.monotonic_ns``),
``system_time`` (``time.time_ns``) and ``duration``.

Handlers run synchronously **in the emitting thread** (an actor, a worker, or yours): keep them
short and never block in them; hand slow work to a queue. A handler that raises is detached,
reported once at ERROR on the ``tinkex_actors.telemetry`` logger and through a
:data:`HANDLER_FAILURE` event; it never breaks the code that emitted the event.

Thread-safety: :func:`execute` reads an immutable handler table without a lock; :func:`attach`
and :func:`detach` replace the table under a lock (copy on write).

Events emitted by tinkex_actors (metadata keys in brackets; never the API key):

* :data:`HTTP_REQUEST_START` ``{monotonic_time, system_time}``
  [method, path, tenant_id, request_type, iteration, span_id]
* :data:`HTTP_REQUEST_STOP` ``{duration, monotonic_time}``
  [the start keys + status, retry_count]
* :data:`HTTP_REQUEST_EXCEPTION` ``{duration, monotonic_time}``
  [the start keys + retry_count, status (None unless the server answered), kind, reason]
* :data:`HTTP_REQUEST_RETRY` ``{delay, monotonic_time}`` (``delay`` in ns)
  [the start keys + attempt, status (None for network errors), reason]
* :data:`QUEUE_STATE_CHANGE` (emitted by the actor runtime)
* :data:`ACTOR_RESTARTED` ``{monotonic_time}`` a crashed client actor was restarted
  [client (training/sampling), id, restarts (in the window), kind, reason, tenant_id]
* :data:`ACTOR_FAILED` ``{monotonic_time}`` a client actor crashed too often and was given up
  [the same keys]
* :data:`HANDLER_FAILURE` ``{monotonic_time}`` [handler_id, event, kind, reason]
* Recovery (``{monotonic_time}``; every one also a log line on ``tinkex_actors.recovery``;
  see ``docs/recovery.md``): :data:`RECOVERY_SESSION_LOST` [session_id, reason, tenant_id],
  :data:`RECOVERY_SESSION_RECOVERED` [+ previous_session_id, attempts],
  :data:`RECOVERY_SESSION_FAILED` [session_id, reason, tenant_id],
  :data:`RECOVERY_MODEL_LOST` [session_id, model_id, reason, checkpoint, restoring, tenant_id],
  :data:`RECOVERY_MODEL_RESTORED` [session_id, model_id, previous_model_id, checkpoint,
  optim_steps, optimizer, attempts, tenant_id], :data:`RECOVERY_MODEL_FAILED` [session_id,
  model_id, checkpoint, reason, tenant_id], :data:`RECOVERY_SAMPLER_REBOUND` [session_id,
  sampler_id, previous_sampler_id, resubmitted, tenant_id], :data:`RECOVERY_SAMPLER_FAILED`
  [session_id, sampler_id, reason, tenant_id]
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import logging
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final, TextIO, TypeAlias

import attrs

from tinkex_actors._logging import LOGGER_NAME, get_logger
from tinkex_actors.errors import ValidationError

__all__ = [
    "ACTOR_FAILED",
    "ACTOR_RESTARTED",
    "ALL_EVENTS",
    "Event",
    "HANDLER_FAILURE",
    "HTTP_REQUEST_EXCEPTION",
    "HTTP_REQUEST_RETRY",
    "HTTP_REQUEST_START",
    "HTTP_REQUEST_STOP",
    "Handler",
    "HandlerInfo",
    "QUEUE_STATE_CHANGE",
    "RECOVERY_EVENTS",
    "RECOVERY_MODEL_FAILED",
    "RECOVERY_MODEL_LOST",
    "RECOVERY_MODEL_RESTORED",
    "RECOVERY_SAMPLER_FAILED",
    "RECOVERY_SAMPLER_REBOUND",
    "RECOVERY_SESSION_FAILED",
    "RECOVERY_SESSION_LOST",
    "RECOVERY_SESSION_RECOVERED",
    "any_enabled",
    "attach",
    "attach_logger",
    "detach",
    "enabled",
    "execute",
    "list_handlers",
    "new_span_id",
    "span",
]

Event: TypeAlias = tuple[str, ...]
#: ``fn(event, measurements, metadata, config)``; the return value is ignored.
Handler: TypeAlias = Callable[[Event, Mapping[str, float], Mapping[str, Any], Any], object]

HTTP_REQUEST_START: Final[Event] = ("tinkex", "http", "request", "start")
HTTP_REQUEST_STOP: Final[Event] = ("tinkex", "http", "request", "stop")
HTTP_REQUEST_EXCEPTION: Final[Event] = ("tinkex", "http", "request", "exception")
HTTP_REQUEST_RETRY: Final[Event] = ("tinkex", "http", "request", "retry")
QUEUE_STATE_CHANGE: Final[Event] = ("tinkex", "queue", "state_change")
HANDLER_FAILURE: Final[Event] = ("tinkex", "telemetry", "handler", "failure")
ACTOR_RESTARTED: Final[Event] = ("tinkex", "actor", "restart")
ACTOR_FAILED: Final[Event] = ("tinkex", "actor", "failed")
RECOVERY_SESSION_LOST: Final[Event] = ("tinkex", "recovery", "session", "lost")
RECOVERY_SESSION_RECOVERED: Final[Event] = ("tinkex", "recovery", "session", "recovered")
RECOVERY_SESSION_FAILED: Final[Event] = ("tinkex", "recovery", "session", "failed")
RECOVERY_MODEL_LOST: Final[Event] = ("tinkex", "recovery", "model", "lost")
RECOVERY_MODEL_RESTORED: Final[Event] = ("tinkex", "recovery", "model", "restored")
RECOVERY_MODEL_FAILED: Final[Event] = ("tinkex", "recovery", "model", "failed")
RECOVERY_SAMPLER_REBOUND: Final[Event] = ("tinkex", "recovery", "sampler", "rebound")
RECOVERY_SAMPLER_FAILED: Final[Event] = ("tinkex", "recovery", "sampler", "failed")
#: The recovery events (see docs/recovery.md).
RECOVERY_EVENTS: Final[tuple[Event, ...]] = (
    RECOVERY_SESSION_LOST,
    RECOVERY_SESSION_RECOVERED,
    RECOVERY_SESSION_FAILED,
    RECOVERY_MODEL_LOST,
    RECOVERY_MODEL_RESTORED,
    RECOVERY_MODEL_FAILED,
    RECOVERY_SAMPLER_REBOUND,
    RECOVERY_SAMPLER_FAILED,
)
#: Every event tinkex_actors emits (what :func:`attach_logger` listens to by default).
ALL_EVENTS: Final[tuple[Event, ...]] = (
    HTTP_REQUEST_START,
    HTTP_REQUEST_STOP,
    HTTP_REQUEST_EXCEPTION,
    HTTP_REQUEST_RETRY,
    QUEUE_STATE_CHANGE,
    ACTOR_RESTARTED,
    ACTOR_FAILED,
    HANDLER_FAILURE,
    *RECOVERY_EVENTS,
)

#: Characters of an exception message kept in failure metadata and logs.
_REASON_LIMIT: Final = 500


@attrs.frozen
class HandlerInfo:
    """An attached handler, as :func:`list_handlers` reports it."""

    id: str
    events: tuple[Event, ...]
    function: Handler = attrs.field(eq=False)
    config: Any = attrs.field(eq=False)


_EMPTY: Final[Mapping[str, Any]] = types.MappingProxyType({})
_lock = threading.Lock()
# Both replaced wholesale under _lock; readers take a reference without locking.
_by_id: dict[str, HandlerInfo] = {}
# Console handlers added by attach_logger, by handler id (removed by detach).
_consoles: dict[str, logging.Handler] = {}


class _Default(enum.Enum):
    # "Not given" for attach_logger's stream (None is meaningful there).
    TOKEN = 0


_DEFAULT: Final = _Default.TOKEN
_table: dict[Event, tuple[HandlerInfo, ...]] = {}
_span_ids = itertools.count(1)


def _check_event(event: object, field: str) -> Event:
    if (
        not isinstance(event, tuple)
        or not event
        or not all(isinstance(part, str) and part for part in event)
    ):
        raise ValidationError(
            f"an event name is a non-empty tuple of non-empty str, got {event!r}", field=field
        )
    return event


def _rebuild(by_id: dict[str, HandlerInfo]) -> None:
    global _by_id, _table
    table: dict[Event, list[HandlerInfo]] = {}
    for info in by_id.values():
        for event in info.events:
            table.setdefault(event, []).append(info)
    _by_id = by_id
    _table = {event: tuple(infos) for event, infos in table.items()}


def attach(
    handler_id: str,
    events: Event | Sequence[Event],
    fn: Handler,
    config: Any = None,
) -> None:
    """Call ``fn(event, measurements, metadata, config)`` on every event in ``events``.

    Args:
        handler_id: unique id, used to :func:`detach` it.
        events: one event name (a tuple of str) or a list of them.
        fn: the handler; it runs in the emitting thread and must not block.
        config: passed to ``fn`` unchanged.

    Raises:
        ValidationError: ``handler_id`` is taken, an event name is malformed, or ``fn`` is
            not callable.
    """
    given_id: object = handler_id  # checked at run time: callers may not be type-checked
    if not isinstance(given_id, str) or not given_id:
        raise ValidationError("must be a non-empty str", field="handler_id")
    if not callable(fn):
        raise ValidationError(f"must be callable, got {type(fn).__name__}", field="fn")
    given: object = events
    names: tuple[Event, ...]
    if isinstance(given, tuple) and all(isinstance(part, str) for part in given):
        names = (_check_event(given, "events"),)
    elif isinstance(given, list | tuple) and given:
        names = tuple(_check_event(e, f"events[{i}]") for i, e in enumerate(given))
    else:
        raise ValidationError(
            f"expected an event name or a non-empty list of them, got {given!r}", field="events"
        )
    info = HandlerInfo(handler_id, tuple(dict.fromkeys(names)), fn, config)
    with _lock:
        if handler_id in _by_id:
            raise ValidationError(f"{handler_id!r} is already attached", field="handler_id")
        _rebuild({**_by_id, handler_id: info})


def detach(handler_id: str) -> bool:
    """Remove the handler ``handler_id``. Returns False if none was attached."""
    with _lock:
        printer = _consoles.pop(handler_id, None)
        if printer is not None:
            logging.getLogger(f"{LOGGER_NAME}.telemetry.console").removeHandler(printer)
        if handler_id not in _by_id:
            return False
        remaining = dict(_by_id)
        del remaining[handler_id]
        _rebuild(remaining)
        return True


def _detach_if_same(info: HandlerInfo) -> bool:
    # Detach exactly this attachment: a handler re-attached under the same id stays.
    with _lock:
        if _by_id.get(info.id) is not info:
            return False
        remaining = dict(_by_id)
        del remaining[info.id]
        _rebuild(remaining)
        return True


def list_handlers(prefix: Event = ()) -> list[HandlerInfo]:
    """Return the handlers attached to at least one event starting with ``prefix``."""
    plen = len(prefix)
    return [
        info for info in _by_id.values() if any(event[:plen] == prefix for event in info.events)
    ]


def new_span_id() -> int:
    """A process-unique id tying the start, stop and exception events of one span."""
    return next(_span_ids)


def enabled(event: Event) -> bool:
    """True when a handler listens to ``event`` (emitters skip building metadata otherwise)."""
    return event in _table


def any_enabled(events: frozenset[Event]) -> bool:
    """True when a handler listens to at least one of ``events`` (one set operation)."""
    return not events.isdisjoint(_table)


def execute(
    event: Event,
    measurements: Mapping[str, float],
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Call every handler attached to ``event``, in the calling thread, in attach order.

    A handler that raises is detached and reported; the others still run and nothing is
    raised to the caller.
    """
    handlers = _table.get(event)
    if not handlers:
        return
    shown = _EMPTY if metadata is None else types.MappingProxyType(dict(metadata))
    for info in handlers:
        try:
            info.function(event, measurements, shown, info.config)
        except Exception as exc:
            _handler_failed(info, event, exc)


def _handler_failed(info: HandlerInfo, event: Event, exc: Exception) -> None:
    if not _detach_if_same(info):
        return  # another thread already detached and reported it
    reason = str(exc)[:_REASON_LIMIT]
    get_logger("telemetry").error(
        "tinkex.telemetry.handler_detached",
        handler_id=info.id,
        telemetry_event=".".join(event),
        kind=type(exc).__qualname__,
        reason=reason,
    )
    execute(
        HANDLER_FAILURE,
        {"monotonic_time": time.monotonic_ns()},
        {"handler_id": info.id, "event": event, "kind": type(exc).__qualname__, "reason": reason},
    )


@contextlib.contextmanager
def span(prefix: Event, metadata: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Emit ``prefix + ("start",)`` now and ``("stop",)`` or ``("exception",)`` at exit.

    Yields a dict, a copy of the start metadata, that the body may add to; stop and exception
    events carry it. Every event of one span has the same ``span_id``. Exception metadata adds
    ``kind`` (the class name), ``reason`` (its message) and ``exception`` (the object). The
    exception is re-raised.

    Example::

        with telemetry.span(("myapp", "step"), {"step": 3}) as meta:
            meta["loss"] = train_step()
    """
    prefix = _check_event(prefix, "prefix")
    start = time.monotonic_ns()
    meta: dict[str, Any] = dict(metadata or {})
    meta["span_id"] = new_span_id()
    execute((*prefix, "start"), {"monotonic_time": start, "system_time": time.time_ns()}, meta)
    body = dict(meta)
    try:
        yield body
    except BaseException as exc:
        end = time.monotonic_ns()
        failed = {
            **body,
            "kind": type(exc).__qualname__,
            "reason": str(exc)[:_REASON_LIMIT],
            "exception": exc,
        }
        execute((*prefix, "exception"), {"duration": end - start, "monotonic_time": end}, failed)
        raise
    end = time.monotonic_ns()
    execute((*prefix, "stop"), {"duration": end - start, "monotonic_time": end}, body)


def attach_logger(
    level: int = logging.INFO,
    *,
    events: Sequence[Event] = ALL_EVENTS,
    handler_id: str = "tinkex_actors.logger",
    stream: TextIO | _Default | None = _DEFAULT,
) -> str:
    """A quick console logger of events: each one a line on standard error, out of the box.

    Each event is logged as ``tinkex.http.request.stop`` (the event joined with dots) with its
    metadata and measurements as keys; durations are added in milliseconds
    (``duration_ms``). Handler failures are always logged at ERROR.

    By default the lines go to ``sys.stderr`` through a handler of their own, on the logger
    ``tinkex_actors.telemetry.console``, which does not propagate (so an application that also
    logs to the console does not see each line twice). Pass ``stream=`` another text stream,
    or ``stream=None`` to log through the library's ``tinkex_actors.telemetry`` logger instead
    (then nothing appears until the application configures logging).

    A logger already attached under ``handler_id`` is replaced; :func:`detach` removes it and
    its console handler.

    Returns:
        The handler id, for :func:`detach`.
    """
    console = sys.stderr if isinstance(stream, _Default) else stream
    name = "telemetry.console" if console is not None else "telemetry"
    stdlib = logging.getLogger(f"{LOGGER_NAME}.{name}")
    log = get_logger(name)

    def handle(
        event: Event, measurements: Mapping[str, float], metadata: Mapping[str, Any], _: Any
    ) -> None:
        at = logging.ERROR if event == HANDLER_FAILURE else level
        if not stdlib.isEnabledFor(at):
            return
        fields: dict[str, Any] = {
            key: value for key, value in metadata.items() if key not in ("exception", "stacktrace")
        }
        if "event" in fields:
            fields["telemetry_event"] = ".".join(fields.pop("event"))
        for key, value in measurements.items():
            if key == "duration" or key == "delay":
                fields[f"{key}_ms"] = round(value / 1e6, 3)
            elif key not in ("monotonic_time", "system_time"):
                fields[key] = value
        log.log(at, ".".join(event), **fields)

    detach(handler_id)
    if console is not None:
        printer = logging.StreamHandler(console)
        printer.setFormatter(logging.Formatter("%(message)s"))
        printer.setLevel(level)
        with _lock:
            _consoles[handler_id] = printer
            stdlib.addHandler(printer)
            stdlib.propagate = False
            if stdlib.level == logging.NOTSET or stdlib.level > level:
                stdlib.setLevel(level)
    attach(handler_id, list(events), handle)
    return handler_id
