"""The latency model: a hosted service's hardware time and the network hop, emulated.

The embedded server answers in microseconds; the hosted Tinker service takes seconds per
sample and a network round trip per request. Benchmarks of client concurrency need the
latter (issue 14), so three flags emulate it:

* ``--sample-latency-ms`` / ``--train-latency-ms``: an asample (forward_backward, forward,
  optim_step) becomes visible to clients no sooner than that long after it was queued. The
  engine runs it as before; only its future's completion is held back, by an event-loop timer
  (:class:`~tinkex_actors.server.pending.PendingRequest`'s ``not_before``). So requests wait
  *in parallel*, as on a fleet of accelerators, not one after another behind the engine's
  workers: 1,000 samples at 2 s take about 2 s. A model's training requests still run in
  ``seq_id`` order.
* ``--network-delay-ms``: :class:`NetworkDelayMiddleware` holds every HTTP answer that long
  before its first byte is sent, with ``asyncio.sleep`` (the event loop keeps serving others).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["NetworkDelayMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class NetworkDelayMiddleware:
    """Delay every HTTP answer by ``delay`` seconds (outermost middleware).

    Args:
        app: the wrapped ASGI app.
        delay: seconds added before each response starts.
    """

    def __init__(self, app: ASGIApp, *, delay: float) -> None:
        self.app = app
        self.delay = delay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        delay = self.delay

        async def delayed(message: Message) -> None:
            if message["type"] == "http.response.start":
                await asyncio.sleep(delay)
            await send(message)

        await self.app(scope, receive, delayed)
