"""``GET /_debug/stats`` (only with ``--debug-stats``): the server's sampling counters.

Not part of the Tinker API (no ``/api/v1`` prefix, off by default); the benchmark reads it to
report how many samples were in flight on the server side. The API key is required as
everywhere. ``POST /_debug/stats/reset`` restarts the peaks from the current values.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from tinkex_actors.server.routes._common import answer, server

__all__ = ["STATS_PATH", "router"]

STATS_PATH = "/_debug/stats"

router = APIRouter()


@router.get(STATS_PATH)
async def stats(request: Request) -> Response:
    """Counters of :class:`~tinkex_actors.server.pending.PendingStats` plus current holdings."""
    return answer(server(request).pending.snapshot())


@router.post(f"{STATS_PATH}/reset")
async def reset(request: Request) -> Response:
    """Restart the peaks; answers the counters after the reset."""
    pending = server(request).pending
    pending.reset_peaks()
    return answer(pending.snapshot())
