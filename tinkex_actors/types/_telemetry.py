"""Telemetry upload (``POST /api/v1/telemetry``): the event types and the batch."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal, TypeAlias

import attrs

from tinkex_actors.types import _validate as v
from tinkex_actors.types._typecheck import typed

__all__ = [
    "EventType",
    "GenericEvent",
    "SessionEndEvent",
    "SessionStartEvent",
    "Severity",
    "TelemetryEvent",
    "TelemetryResponse",
    "TelemetrySendRequest",
    "UnhandledExceptionEvent",
]

EventType: TypeAlias = Literal[
    "SESSION_START", "SESSION_END", "UNHANDLED_EXCEPTION", "GENERIC_EVENT"
]
Severity: TypeAlias = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
_SEVERITIES = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TIMESTAMP = v.instance_of(dt.datetime)


@attrs.frozen(kw_only=True, field_transformer=typed)
class SessionStartEvent:
    """The session started."""

    event_id: str = attrs.field(validator=v.str_field(nonempty=True))
    event_session_index: int = attrs.field(validator=v.int_field(minimum=0))
    severity: Severity = attrs.field(validator=v.one_of(_SEVERITIES))
    timestamp: dt.datetime = attrs.field(validator=_TIMESTAMP)
    event: Literal["SESSION_START"] = attrs.field(
        default="SESSION_START", validator=v.one_of(("SESSION_START",))
    )


@attrs.frozen(kw_only=True, field_transformer=typed)
class SessionEndEvent:
    """The session ended after ``duration`` (an ISO-8601 duration such as ``"PT12.5S"``)."""

    event_id: str = attrs.field(validator=v.str_field(nonempty=True))
    event_session_index: int = attrs.field(validator=v.int_field(minimum=0))
    severity: Severity = attrs.field(validator=v.one_of(_SEVERITIES))
    timestamp: dt.datetime = attrs.field(validator=_TIMESTAMP)
    duration: str = attrs.field(validator=v.str_field())
    event: Literal["SESSION_END"] = attrs.field(
        default="SESSION_END", validator=v.one_of(("SESSION_END",))
    )


@attrs.frozen(kw_only=True, field_transformer=typed)
class UnhandledExceptionEvent:
    """An exception escaped a client call."""

    event_id: str = attrs.field(validator=v.str_field(nonempty=True))
    event_session_index: int = attrs.field(validator=v.int_field(minimum=0))
    severity: Severity = attrs.field(validator=v.one_of(_SEVERITIES))
    timestamp: dt.datetime = attrs.field(validator=_TIMESTAMP)
    error_message: str = attrs.field(validator=v.str_field())
    error_type: str = attrs.field(validator=v.str_field())
    traceback: str | None = attrs.field(default=None, validator=v.str_field(optional=True))
    event: Literal["UNHANDLED_EXCEPTION"] = attrs.field(
        default="UNHANDLED_EXCEPTION", validator=v.one_of(("UNHANDLED_EXCEPTION",))
    )


@attrs.frozen(kw_only=True, field_transformer=typed)
class GenericEvent:
    """A named event with free-form JSON data."""

    event_id: str = attrs.field(validator=v.str_field(nonempty=True))
    event_session_index: int = attrs.field(validator=v.int_field(minimum=0))
    severity: Severity = attrs.field(validator=v.one_of(_SEVERITIES))
    timestamp: dt.datetime = attrs.field(validator=_TIMESTAMP)
    event_name: str = attrs.field(validator=v.str_field(nonempty=True))
    event_data: dict[str, Any] = attrs.field(factory=dict, validator=v.str_mapping())
    event: Literal["GENERIC_EVENT"] = attrs.field(
        default="GENERIC_EVENT", validator=v.one_of(("GENERIC_EVENT",))
    )


TelemetryEvent: TypeAlias = (
    SessionStartEvent | SessionEndEvent | UnhandledExceptionEvent | GenericEvent
)


@attrs.frozen(kw_only=True, field_transformer=typed)
class TelemetrySendRequest:
    """A batch of telemetry events."""

    events: list[TelemetryEvent] = attrs.field(
        validator=v.list_of(
            (SessionStartEvent, SessionEndEvent, UnhandledExceptionEvent, GenericEvent)
        )
    )
    platform: str = attrs.field(validator=v.str_field())
    sdk_version: str = attrs.field(validator=v.str_field(nonempty=True))
    session_id: str = attrs.field(validator=v.str_field(nonempty=True))
    process_uuid: str = attrs.field(validator=v.str_field(nonempty=True))


@attrs.frozen(kw_only=True, field_transformer=typed)
class TelemetryResponse:
    """Answer of telemetry."""

    status: Literal["accepted"]
