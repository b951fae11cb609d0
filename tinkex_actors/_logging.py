"""Library logging: structlog over the stdlib ``tinkex_actors`` logger, silent by default.

The library never configures logging. It logs through its own stdlib logger, which carries a
``NullHandler``, wrapped by structlog so that an application that configures structlog gets
its processors applied, and one that configures only stdlib logging gets plain records.
Loggers are created per call site with :func:`get_logger`; never bind at import time.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

__all__ = ["LOGGER_NAME", "get_logger"]

LOGGER_NAME = "tinkex_actors"

logging.getLogger(LOGGER_NAME).addHandler(logging.NullHandler())


def get_logger(name: str | None = None, **initial_values: Any) -> Any:
    """Return a structlog logger over the stdlib logger ``tinkex_actors[.name]``.

    Event names are dotted and stable (``tinkex.session.heartbeat_failed``); keys are
    snake_case. Never pass an API key or a request payload.
    """
    stdlib = logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)
    return structlog.wrap_logger(
        stdlib, wrapper_class=structlog.stdlib.BoundLogger, **initial_values
    )
