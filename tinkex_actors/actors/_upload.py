"""Session telemetry upload (protocol §3.9), like the official SDK's, when enabled.

With ``Config.telemetry_enabled`` a ServiceClient reports ``SESSION_START`` when it starts
(sent from the tenant's worker pool, so construction does not wait for it) and
``SESSION_END`` with the session's duration when it closes. Each batch is one
``POST /api/v1/telemetry`` with a short timeout and no retries; a failure is logged at DEBUG
and otherwise ignored. Events carry no API key and no payloads.
"""

from __future__ import annotations

import datetime as dt
import itertools
import sys
import time
import uuid
from typing import Final

from tinkex_actors import _constants as c
from tinkex_actors import _endpoints as ep
from tinkex_actors._logging import get_logger
from tinkex_actors.actors._runtime import Runtime
from tinkex_actors.errors import TinkexError
from tinkex_actors.futures import ActorFuture
from tinkex_actors.types import SessionEndEvent, SessionStartEvent, TelemetrySendRequest
from tinkex_actors.wire import encode_json

__all__ = ["SessionReporter"]

_PATH: Final = ep.TELEMETRY.path()
#: One id per process, as the protocol's ``process_uuid``.
_PROCESS_UUID: Final = str(uuid.uuid4())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class SessionReporter:
    """Uploads a session's start and end events."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._index = itertools.count()
        self._started = time.monotonic()
        self._start: ActorFuture[None] | None = None

    def start(self) -> None:
        """Queue ``SESSION_START`` on the tenant's pool."""
        event = SessionStartEvent(
            event_id=str(uuid.uuid4()),
            event_session_index=next(self._index),
            severity="INFO",
            timestamp=_now(),
        )
        self._start = self._runtime.pool.submit(self._send, [event], c.TELEMETRY_TIMEOUT)

    def end(self, timeout: float) -> None:
        """Send ``SESSION_END`` (after the start event), within about ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        if self._start is not None:
            try:
                self._start.exception(timeout=max(0.0, timeout))
            except TinkexError:
                return  # the start is still stuck: give up on the end too
        seconds = time.monotonic() - self._started
        event = SessionEndEvent(
            event_id=str(uuid.uuid4()),
            event_session_index=next(self._index),
            severity="INFO",
            timestamp=_now(),
            duration=f"PT{seconds:.3f}S",
        )
        left = deadline - time.monotonic()
        if left > c.POLL_MIN_TIMEOUT:
            self._send([event], min(c.TELEMETRY_TIMEOUT, left))

    def _send(self, events: list[SessionStartEvent | SessionEndEvent], timeout: float) -> None:
        runtime = self._runtime
        batch = TelemetrySendRequest(
            events=list(events),
            platform=sys.platform,
            sdk_version=c.WIRE_SDK_VERSION,
            session_id=runtime.session_id,
            process_uuid=_PROCESS_UUID,
        )
        try:
            runtime.transport.request(
                "POST", _PATH, body=encode_json(batch), timeout=timeout, max_retries=0
            )
        except Exception as exc:  # telemetry never breaks the client
            get_logger("telemetry").debug(
                "tinkex.telemetry.upload_failed", error=type(exc).__name__
            )
