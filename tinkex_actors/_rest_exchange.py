"""Sending the REST calls whose retry rules differ from the transport's.

Two calls need their own loop: the archive URL (a redirect is the answer, not something to
follow; 503 means "still being generated" and is waited out up to
:data:`~tinkex_actors._constants.ARCHIVE_MAX_ATTEMPTS` times, :data:`ARCHIVE_RETRY_DELAY`
apart or the server's shorter ``retry-after``), and publish/unpublish (409 is a final answer,
"already public"). Everything else is retried as the transport would (connection errors,
408/409/429/5xx, ``retry-after``, ``x-should-retry``), up to ``Config.max_retries`` times,
with one idempotency key across the attempts.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, Final

from tinkex_actors import _constants as c
from tinkex_actors._logging import get_logger
from tinkex_actors._rest_requests import Call
from tinkex_actors.errors import APIConnectionError, APIStatusError
from tinkex_actors.transport import HTTPTransport, Response, RetryPolicy
from tinkex_actors.transport._headers import new_idempotency_key

__all__ = ["exchange"]

_ARCHIVE_PENDING: Final = 503
_POLICY: Final = RetryPolicy()


def exchange(
    transport: HTTPTransport,
    call: Call[Any],
    max_retries: int,
    sleep: Callable[[float], None],
) -> Response:
    """Send ``call``, retrying like the transport except for its final statuses (see above).

    Returns:
        The answer: 2xx, or for the archive call also a 3xx (its ``Location`` is the URL).

    Raises:
        APIStatusError / APIConnectionError: the last attempt's failure.
    """
    key = None if call.method in ("GET", "HEAD") else new_idempotency_key()
    pending = 0
    failures = 0
    log = get_logger("rest")
    while True:
        try:
            return transport.request(
                call.method,
                call.path,
                query=call.query,
                body=call.body,
                max_retries=0,
                idempotency_key=key,
                follow_redirects=not call.archive,
            )
        except APIStatusError as exc:
            if call.archive and exc.status_code == _ARCHIVE_PENDING:
                pending += 1
                if pending >= c.ARCHIVE_MAX_ATTEMPTS:
                    raise
                requested = _POLICY.retry_after(exc.headers, time.time())
                delay = min(requested or c.ARCHIVE_RETRY_DELAY, c.ARCHIVE_RETRY_DELAY)
                log.warning(
                    "tinkex.rest.archive_pending",
                    path=call.path,
                    attempt=pending,
                    delay_s=delay,
                    hint="the checkpoint archive is being created; this may take a while",
                )
                sleep(delay)
                continue
            if (
                exc.status_code in call.final_statuses
                or failures >= max_retries
                or not _POLICY.should_retry(exc.status_code, exc.headers)
            ):
                raise
            delay = _POLICY.delay(failures, exc.headers, random.random(), time.time())
        except APIConnectionError:
            if failures >= max_retries:
                raise
            delay = _POLICY.backoff(failures, random.random())
        failures += 1
        log.warning("tinkex.rest.retry", path=call.path, attempt=failures, delay_s=delay)
        sleep(delay)
