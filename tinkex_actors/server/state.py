"""Everything one running server holds, and the ownership checks every route applies.

Tenancy rule: a tenant sees only its own sessions, runs, checkpoints, samplers and futures;
others' are reported as not found (404). Published checkpoints (and the runs holding them)
are readable, loadable and sampleable by every tenant, but only their owner may change or
delete them (403 for others).

Sessions expire after ``session_timeout`` seconds without a heartbeat (when set): the first
check that notices (a call naming the session, or the periodic sweep) marks it expired and
releases what it held; from then on calls naming it or its models get 410. A model saved at
the last graceful shutdown is restored by the first call naming it (see ``persistence.py``);
one the last process held but never saved (SIGKILL, crash) answers 410 saying it was lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tinkex_actors._logging import get_logger
from tinkex_actors.errors import InternalServerError
from tinkex_actors.server.archives import ArchiveSigner
from tinkex_actors.server.checkpoints import CheckpointFiles, TinkerPath
from tinkex_actors.server.engine_api import BaseModelInfo, LoraSpec, OptimizerSpec
from tinkex_actors.server.engine_host import EngineHost
from tinkex_actors.server.http_errors import bad_request, forbidden, gone, not_found, unavailable
from tinkex_actors.server.idempotency import IdempotencyCache
from tinkex_actors.server.pending import PendingRequests, ResultKind
from tinkex_actors.server.persistence import RESTORE_SEQ_ID, restore_job
from tinkex_actors.server.rate_limit import SampleRateLimiter
from tinkex_actors.server.scheduler import Job, Scheduler
from tinkex_actors.server.settings import RESTORE_RETRY_AFTER, ServerSettings
from tinkex_actors.server.store import (
    SESSION_ACTIVE,
    SESSION_EXPIRED,
    CheckpointRow,
    RunRow,
    SessionRow,
    Store,
)
from tinkex_actors.server.store_live import MODEL_LOST, MODEL_SAVED, LiveModelRow
from tinkex_actors.server.tokens import TokenIssuer

__all__ = ["LiveModel", "LiveSampler", "ServerState", "digest"]


def digest(raw: bytes) -> bytes:
    """A short fingerprint of a request body (for idempotency and seq_id dedupe)."""
    return hashlib.blake2b(raw, digest_size=16).digest()


@dataclass
class LiveModel:
    """A training adapter held by the engine (or being created)."""

    model_id: str
    tenant: str
    session_id: str
    base: BaseModelInfo
    lora: LoraSpec
    last_request_time: float = field(default_factory=time.time)
    #: The optimizer family chosen at creation (fixed for the model's life).
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)


@dataclass
class LiveSampler:
    """A sampler held by the engine."""

    sampler_id: str
    tenant: str
    base: BaseModelInfo


class ServerState:
    """The running server's components and in-memory registries."""

    def __init__(
        self,
        *,
        settings: ServerSettings,
        store: Store,
        files: CheckpointFiles,
        signer: ArchiveSigner,
        host: EngineHost,
        scheduler: Scheduler,
        pending: PendingRequests,
        idempotency: IdempotencyCache,
        loop: asyncio.AbstractEventLoop,
        rate_limiter: SampleRateLimiter | None = None,
        tokens: TokenIssuer | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.files = files
        self.signer = signer
        self.host = host
        self.scheduler = scheduler
        self.pending = pending
        self.idempotency = idempotency
        self.loop = loop
        #: ``--rate-limit``: per-tenant asample limits (event loop only).
        self.rate_limiter = SampleRateLimiter({}) if rate_limiter is None else rate_limiter
        #: ``--jwt-auth``: issues and checks JWTs (None when off).
        self.tokens = tokens
        self.models: dict[str, LiveModel] = {}
        #: Models registered again after a restart whose restore job has not run yet.
        self.restoring: set[str] = set()
        #: Releases what a finished or expired session holds (set by the app: the routes own
        #: the release of models and samplers).
        self.on_session_end: Callable[[str], None] = lambda session_id: None
        self.samplers: dict[str, LiveSampler] = {}
        #: (run_id, checkpoint_id) of saves queued but not finished (name conflicts -> 409).
        self.reserved: set[tuple[str, str]] = set()
        #: Guards the registries above when touched from worker threads.
        self.lock = threading.Lock()
        self.shutting_down = False
        self.log = get_logger("server")

    # ------------------------------------------------------------------ engine
    def base_info(self, name: str, field_name: str = "base_model") -> BaseModelInfo:
        """A served base model (call after the engine is ready); 400 when unknown."""
        info = self.host.models().get(name)
        if info is None:
            served = sorted(self.host.models())
            raise bad_request(f"{field_name}: unknown base model {name!r}; served: {served}")
        return info

    # ------------------------------------------------------------------ sessions
    def owned_session(self, tenant: str, session_id: str, *, active: bool = True) -> SessionRow:
        """The tenant's session; 404 when unknown or foreign; if ``active``, 410 when it was
        finished or expired (it expires here when its heartbeat is overdue)."""
        row = self.store.get_session(session_id)
        if row is None or row.owner != tenant:
            raise not_found(f"unknown session {session_id!r}")
        if active:
            status = row.status
            if status == SESSION_ACTIVE and self._overdue(row) and self.expire_session(session_id):
                status = SESSION_EXPIRED
            if status == SESSION_EXPIRED:
                raise gone(self._expired_message(session_id))
            if status != SESSION_ACTIVE:
                raise gone(f"session {session_id!r} was finished")
        return row

    def _overdue(self, row: SessionRow) -> bool:
        timeout = self.settings.session_timeout
        return timeout > 0 and time.time() - row.last_heartbeat > timeout

    def _expired_message(self, session_id: str) -> str:
        timeout = self.settings.session_timeout
        why = f"no heartbeat for more than {timeout:g} s" if timeout > 0 else "ended by the server"
        return (
            f"session {session_id!r} expired ({why}); its live models and samplers were "
            "released (training runs and checkpoints stay): create a new session"
        )

    def expire_session(self, session_id: str) -> bool:
        """Expire an active session now and release what it holds; False if it had ended."""
        if not self.store.expire_session(session_id):
            return False
        self.log.info("tinkex.server.session_expired", session_id=session_id)
        self.on_session_end(session_id)
        return True

    # ------------------------------------------------------------------ models
    def live_model(self, tenant: str, model_id: str) -> LiveModel:
        """The tenant's live adapter, restored first if it was saved at the last shutdown.

        Raises:
            APIStatusError: 404 unknown, foreign, unloaded or its session finished; 410 its
                session expired or it was lost (the last process stopped without saving it);
                503 (retry-after) it is to be restored but the engine is still starting.
        """
        with self.lock:
            model = self.models.get(model_id)
        if model is not None and model.tenant == tenant:
            model.last_request_time = time.time()
            return model
        run = self.store.get_run(model_id)
        if run is None or run.owner != tenant:
            raise not_found(f"unknown model {model_id!r}")
        session = self.store.get_session(run.session_id)
        if session is not None and session.status == SESSION_ACTIVE and self._overdue(session):
            self.expire_session(session.session_id)
            session = self.store.get_session(run.session_id)
        if session is not None and session.status == SESSION_EXPIRED:
            raise gone(
                f"model {model_id!r} was released when its session {run.session_id!r} expired; "
                "its state since its last checkpoint is gone: restore it in a new session with "
                "create_training_client_from_state(<tinker path>)"
            )
        saved = self.store.get_live_model(model_id)
        if saved is not None and saved.status == MODEL_SAVED:
            return self._restore(run, saved)
        if saved is not None and saved.status == MODEL_LOST:
            raise gone(
                f"model {model_id!r} was lost: the server stopped without saving it (killed or "
                "crashed), so its state since its last checkpoint is gone; restore it with "
                "create_training_client_from_state(<tinker path>)"
            )
        raise not_found(
            f"model {model_id!r} is not loaded on this server (it was unloaded or its session "
            "finished); restore it from a checkpoint with "
            "create_training_client_from_state(<tinker path>)"
        )

    def _restore(self, run: RunRow, saved: LiveModelRow) -> LiveModel:
        """Register a model saved at the last shutdown and queue its restore first in line."""
        if not self.host.is_ready():
            raise unavailable(
                f"model {run.run_id!r} will be restored from the state saved when the server "
                "last stopped, once the engine has started",
                retry_after=RESTORE_RETRY_AFTER,
            )
        if self.host.error is not None:
            raise InternalServerError(
                f"the engine failed to start: {self.host.error}", status_code=500
            )
        base = self.host.models().get(run.base_model)
        if base is None:
            raise not_found(
                f"model {run.run_id!r} was saved when the server last stopped, but its base "
                f"model {run.base_model!r} is not served now"
            )
        lora = LoraSpec(
            rank=run.lora_rank,
            seed=run.seed,
            train_mlp=run.train_mlp,
            train_attn=run.train_attn,
            train_unembed=run.train_unembed,
        )
        model = LiveModel(run.run_id, run.owner, run.session_id, base, lora)
        with self.lock:
            existing = self.models.get(run.run_id)
            if existing is not None:
                return existing
            self.models[run.run_id] = model
            self.restoring.add(run.run_id)
        self.scheduler.open_lane(run.run_id, saved.last_seq)
        job, cleanup = restore_job(self, model, saved)
        future = self.pending.create(run.owner, ResultKind.JSON, self.loop)
        self.scheduler.submit(
            run.run_id, Job(run=job, future=future, seq_id=RESTORE_SEQ_ID, on_failure=cleanup)
        )
        return model

    def visible_run(self, tenant: str, run_id: str, *, accessible: bool = True) -> RunRow:
        """A run the tenant owns (or, if ``accessible``, one with public checkpoints)."""
        run = self.store.get_run(run_id)
        if run is not None and (
            run.owner == tenant or (accessible and self.store.run_has_public(run_id, time.time()))
        ):
            return run
        raise not_found(f"unknown training run {run_id!r}")

    # ------------------------------------------------------------------ checkpoints
    def visible_checkpoint(self, tenant: str, path: TinkerPath) -> tuple[CheckpointRow, RunRow]:
        """A checkpoint the tenant owns or that is published; 404 otherwise."""
        row = self.store.get_checkpoint(path.run_id, path.checkpoint_id, time.time())
        if row is None or not (row.owner == tenant or row.public):
            raise not_found(f"unknown checkpoint {path}")
        run = self.store.get_run(path.run_id)
        if run is None:
            raise not_found(f"unknown training run {path.run_id!r}")
        return row, run

    def owned_checkpoint(self, tenant: str, path: TinkerPath) -> CheckpointRow:
        """A checkpoint the tenant may change: 404 if invisible, 403 if someone else's."""
        row, _ = self.visible_checkpoint(tenant, path)
        if row.owner != tenant:
            raise forbidden(f"checkpoint {path} belongs to another user")
        return row
