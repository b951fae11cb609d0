"""Owns the engine: builds and prepares it, starts it on a background thread, reports readiness.

:meth:`EngineHost.start` builds the engine and runs its cheap :meth:`Engine.prepare` (e.g.
publishing the default model's tokenizer) before returning, that is before the server
answers anything; the heavy :meth:`Engine.start` (torch import, model build) runs in the
background. The HTTP layer answers (healthz included) while the engine warms up; engine work
queues until :attr:`EngineHost.ready`, and synchronous endpoints that need it await
:meth:`wait`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from tinkex_actors._logging import get_logger
from tinkex_actors.errors import InternalServerError
from tinkex_actors.server.engine_api import BaseModelInfo, Engine
from tinkex_actors.server.http_errors import unavailable

__all__ = ["EngineHost"]

_JOIN_TIMEOUT = 60.0


class EngineHost:
    """The engine and its warm-up.

    Args:
        factory: builds the (not yet started) engine; called by :meth:`start`, which must be
            cheap (heavy loading belongs in the engine's ``start``).
        loop: the server's event loop (to wake async waiters).
        on_ready: called (on the warm-up thread) once the engine is ready or failed.
    """

    def __init__(
        self,
        factory: Callable[[], Engine],
        loop: asyncio.AbstractEventLoop,
        on_ready: Callable[[], None],
    ) -> None:
        self._factory = factory
        self._loop = loop
        self._on_ready = on_ready
        self._engine: Engine | None = None
        self._models: dict[str, BaseModelInfo] = {}
        self._error: str | None = None
        self._done = threading.Event()
        self._async_done = asyncio.Event()
        self._thread: threading.Thread | None = None
        self._log = get_logger("server.engine")

    def start(self) -> None:
        """Build and prepare the engine now, then start warming it up in the background.

        A failure to build or prepare is recorded like a failed warm-up (engine work then
        fails with a 500 saying why); it is not raised.
        """
        built: Engine | None = None
        try:
            built = self._factory()
            built.prepare()
        except Exception as exc:
            self._error = f"{type(exc).__name__}: {exc}"
            self._log.exception("tinkex.server.engine_failed")
            built = None
        self._thread = threading.Thread(
            target=self._warm_up, args=(built,), name="tinkex-server-engine-warmup", daemon=True
        )
        self._thread.start()

    def _warm_up(self, engine: Engine | None) -> None:
        if engine is not None:  # else building it failed: already recorded
            try:
                engine.start()
                models = {info.name: info for info in engine.base_models()}
            except Exception as exc:
                self._error = f"{type(exc).__name__}: {exc}"
                self._log.exception("tinkex.server.engine_failed")
            else:
                self._engine, self._models = engine, models
                self._log.info(
                    "tinkex.server.engine_ready", engine=engine.name, models=list(models)
                )
        self._done.set()
        try:
            self._loop.call_soon_threadsafe(self._async_done.set)
        except RuntimeError:  # the loop already closed (shutdown during warm-up)
            return
        self._on_ready()

    def is_ready(self) -> bool:
        """Whether warm-up finished (successfully or not: failures then fail each job)."""
        return self._done.is_set()

    @property
    def engine(self) -> Engine:
        """The started engine.

        Raises:
            RuntimeError: warm-up failed or has not finished.
        """
        if self._engine is None:
            raise RuntimeError(f"the engine is not available: {self._error or 'starting'}")
        return self._engine

    @property
    def error(self) -> str | None:
        """Why warm-up failed, if it did."""
        return self._error

    def models(self) -> dict[str, BaseModelInfo]:
        """Served base models by name (empty until ready)."""
        return self._models

    async def wait(self, timeout: float) -> None:
        """Wait for warm-up.

        Raises:
            APIStatusError: 503 (with retry-after) when it takes longer than ``timeout``, or
                500 when it failed.
        """
        if not self._done.is_set():
            try:
                await asyncio.wait_for(self._async_done.wait(), timeout)
            except TimeoutError:
                raise unavailable("the engine is still starting", retry_after=2) from None
        if self._engine is None:
            raise InternalServerError(f"the engine failed to start: {self._error}", status_code=500)

    def close(self) -> None:
        """Wait (bounded) for warm-up, then close the engine."""
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(_JOIN_TIMEOUT)
        if self._engine is not None:
            try:
                self._engine.close()
            except Exception:
                self._log.exception("tinkex.server.engine_close_failed")
