"""``X-Idempotency-Key``: a repeated key returns the first request's answer.

The official SDK sends one key per call and reuses it across that call's transport retries,
so a retry of a request whose answer was lost gets the same future (same ``request_id``)
instead of running the work twice. A key reused for a different request gets 409. Entries
are per tenant, bounded in number and age; a request that failed is forgotten, so its retry
runs again.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tinkex_actors.server.http_errors import conflict

__all__ = ["IdempotencyCache"]


@dataclass
class _Entry:
    path: str
    digest: bytes
    created: float
    answer: asyncio.Future[dict[str, Any]]


class IdempotencyCache:
    """Answers by ``(tenant, key)``; used on the event loop only.

    Args:
        max_entries: the most keys remembered (oldest forgotten first).
        ttl: seconds a key is remembered.
    """

    def __init__(self, max_entries: int, ttl: float) -> None:
        self._max = max_entries
        self._ttl = ttl
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    async def run(
        self,
        tenant: str,
        key: str | None,
        path: str,
        digest: bytes,
        produce: Callable[[], Awaitable[dict[str, Any]]],
    ) -> dict[str, Any]:
        """The first answer for this key, or ``produce()``'s (remembered under the key)."""
        if not key:
            return await produce()
        slot = (tenant, key)
        entry = self._entries.get(slot)
        now = time.monotonic()
        if entry is not None and now - entry.created <= self._ttl:
            if entry.path != path or entry.digest != digest:
                raise conflict("X-Idempotency-Key was already used for a different request")
            return await asyncio.shield(entry.answer)
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._entries[slot] = _Entry(path, digest, now, answer)
        self._entries.move_to_end(slot)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
        try:
            result = await produce()
        except BaseException as exc:
            if self._entries.get(slot) is not None and self._entries[slot].answer is answer:
                del self._entries[slot]
            if isinstance(exc, Exception):
                answer.set_exception(exc)
                answer.exception()  # marked retrieved: only concurrent duplicates await it
            else:
                answer.cancel()
            raise
        answer.set_result(result)
        return result

    def sweep(self) -> None:
        """Forget keys older than the TTL."""
        cutoff = time.monotonic() - self._ttl
        while self._entries:
            slot, entry = next(iter(self._entries.items()))
            if entry.created >= cutoff:
                break
            del self._entries[slot]
