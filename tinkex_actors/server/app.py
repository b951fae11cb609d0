"""The app factory: wires settings, storage, engine, scheduler and routes into a FastAPI app.

Start-up opens the SQLite store, marks the models the previous process held without saving
them as lost, restarts the heartbeat clock of active sessions, removes leftovers of
interrupted saves, loads (or creates) the archive secret and starts the engine's warm-up in
the background, so the HTTP layer is healthy at once. Shut-down releases long-polls, lets
running engine work finish, fails what is still queued, saves every live model (weights and
optimizer state, see ``persistence.py``), closes the engine and the database.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from tinkex_actors._constants import API_PREFIX, SERVER_IDEMPOTENCY_MAX
from tinkex_actors._logging import get_logger
from tinkex_actors._version import __version__
from tinkex_actors.errors import APIStatusError
from tinkex_actors.server.archives import ArchiveSigner
from tinkex_actors.server.auth import KeyRing
from tinkex_actors.server.checkpoints import CheckpointFiles
from tinkex_actors.server.engine_api import Engine
from tinkex_actors.server.engine_host import EngineHost
from tinkex_actors.server.engines import load_engine
from tinkex_actors.server.idempotency import IdempotencyCache
from tinkex_actors.server.latency import NetworkDelayMiddleware
from tinkex_actors.server.middleware import GuardMiddleware
from tinkex_actors.server.pending import PendingRequests
from tinkex_actors.server.persistence import save_live_models
from tinkex_actors.server.rate_limit import SampleRateLimiter
from tinkex_actors.server.request_log import RequestLogMiddleware
from tinkex_actors.server.routes import (
    debug,
    models,
    rest,
    sampling,
    service,
    testing_hooks,
    training,
    weights,
)
from tinkex_actors.server.routes._common import answer, release_rejected
from tinkex_actors.server.routes.results import ResultsEndpoint
from tinkex_actors.server.scheduler import Scheduler
from tinkex_actors.server.sessions import end_session, expire_idle_sessions
from tinkex_actors.server.settings import ServerSettings
from tinkex_actors.server.state import ServerState
from tinkex_actors.server.store import Store
from tinkex_actors.server.tokens import TokenIssuer

__all__ = ["begin_shutdown", "create_app"]

DATABASE_FILE = "server.db"


def _open_state(
    settings: ServerSettings, factory: Callable[[], Engine], tokens: TokenIssuer | None
) -> ServerState:
    log = get_logger("server")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.data_dir / DATABASE_FILE)
    lost = store.mark_unsaved_models_lost()
    if lost:
        log.warning("tinkex.server.unsaved_models_lost", count=lost)
    store.touch_active_sessions(time.time())
    files = CheckpointFiles(settings.data_dir)
    removed = files.recover(store.checkpoint_dirs() | store.saved_model_dirs())
    if removed:
        log.warning("tinkex.server.incomplete_saves_removed", entries=removed)
    loop = asyncio.get_running_loop()
    holder: list[EngineHost] = []
    scheduler = Scheduler(
        workers=settings.workers,
        gap_timeout=settings.seq_gap_timeout,
        is_ready=lambda: holder[0].is_ready(),
        loop=loop,
    )
    host = EngineHost(factory, loop, on_ready=scheduler.kick_all)
    holder.append(host)
    state = ServerState(
        settings=settings,
        store=store,
        files=files,
        signer=ArchiveSigner(settings.data_dir),
        host=host,
        scheduler=scheduler,
        pending=PendingRequests(settings.future_ttl, settings.delivered_future_ttl),
        idempotency=IdempotencyCache(SERVER_IDEMPOTENCY_MAX, settings.future_ttl),
        loop=loop,
        rate_limiter=SampleRateLimiter(settings.rate_limits),
        tokens=tokens,
    )
    state.on_session_end = partial(end_session, state)
    host.start()
    return state


async def _sweep(state: ServerState) -> None:
    """Delete expired checkpoints; forget old futures and idempotency keys."""
    while True:
        await asyncio.sleep(state.settings.expiry_sweep_interval)
        try:
            for row in state.store.expired_checkpoints(time.time()):
                dir_name = state.store.delete_checkpoint(row.run_id, row.checkpoint_id)
                if dir_name is not None:
                    await asyncio.to_thread(state.files.remove, dir_name)
            state.pending.sweep()
            state.idempotency.sweep()
            expire_idle_sessions(state)
        except Exception:
            state.log.exception("tinkex.server.sweep_failed")


def begin_shutdown(app: FastAPI) -> None:
    """Release every long-poll now (called from the signal handler, before HTTP drains)."""
    state: ServerState | None = getattr(app.state, "server", None)
    if state is not None:
        state.shutting_down = True
        state.pending.wake_all()


async def _close_state(state: ServerState) -> None:
    state.shutting_down = True
    state.pending.wake_all()
    await asyncio.to_thread(state.scheduler.shutdown)
    try:
        await asyncio.to_thread(save_live_models, state)
    except Exception:
        state.log.exception("tinkex.server.models_save_failed")
    await asyncio.to_thread(state.host.close)
    state.store.close()


async def _status_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIStatusError)
    release_rejected(request, exc.status_code)
    return answer({"detail": str(exc)}, exc.status_code, exc.headers or None)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg')}" for err in exc.errors()
    )
    return answer({"detail": problems or "invalid request"}, 400)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers) if exc.headers else None
    return answer({"detail": exc.detail or "error"}, exc.status_code, headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    get_logger("server").error("tinkex.server.unhandled", path=request.url.path, exc_info=exc)
    return answer({"detail": f"internal server error: {type(exc).__name__}"}, 500)


def create_app(
    settings: ServerSettings, *, engine_factory: Callable[[], Engine] | None = None
) -> FastAPI:
    """Build the server's ASGI app.

    Args:
        settings: validated settings.
        engine_factory: builds the engine (default: :func:`load_engine` from the settings);
            called on the warm-up thread.
    """
    keyring = KeyRing(settings.api_keys)
    tokens: TokenIssuer | None = None
    if settings.jwt_auth:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        tokens = TokenIssuer(settings.data_dir, settings.jwt_ttl, keyring.accepts_tenant)
    factory = engine_factory or partial(
        load_engine,
        settings.engine,
        data_dir=settings.data_dir,
        models=settings.models,
        simulate_ms=settings.simulate_ms,
        threads=settings.threads,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = _open_state(settings, factory, tokens)
        app.state.server = state
        sweeper = asyncio.create_task(_sweep(state), name="tinkex-server-sweeper")
        try:
            yield
        finally:
            sweeper.cancel()
            await _close_state(state)

    app = FastAPI(
        title="tinkex_actors embedded Tinker server",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    for module in (service, models, training, weights, sampling, rest):
        app.include_router(module.router)
    if settings.test_hooks:
        app.include_router(testing_hooks.router)
    if settings.debug_stats:
        app.include_router(debug.router)
    app.add_exception_handler(APIStatusError, _status_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    # Added first, so it runs inside the guard: authenticated, ahead of the router.
    app.add_middleware(ResultsEndpoint)
    app.add_middleware(
        GuardMiddleware,
        keyring=keyring,
        open_paths=frozenset({f"{API_PREFIX}/healthz"}),
        open_prefixes=(rest.ARCHIVE_PREFIX, rest.FILES_PREFIX),
        max_body_bytes=settings.max_body_bytes,
        tokens=tokens,
    )
    if settings.network_delay_ms:
        # Every answer, 401s included, crosses the emulated hop.
        app.add_middleware(NetworkDelayMiddleware, delay=settings.network_delay_ms / 1000)
    # Outermost: logs every answer, the guard's 401 and 413 included.
    app.add_middleware(RequestLogMiddleware)
    return app
