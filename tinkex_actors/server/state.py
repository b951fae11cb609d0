"""Everything one running server holds, and the ownership checks every route applies.

Tenancy rule: a tenant sees only its own sessions, runs, checkpoints, samplers and futures;
others' are reported as not found (404). Published checkpoints (and the runs holding them)
are readable, loadable and sampleable by every tenant, but only their owner may change or
delete them (403 for others).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from dataclasses import dataclass, field

from tinkex_actors._logging import get_logger
from tinkex_actors.server.archives import ArchiveSigner
from tinkex_actors.server.checkpoints import CheckpointFiles, TinkerPath
from tinkex_actors.server.engine_api import BaseModelInfo, LoraSpec, OptimizerSpec
from tinkex_actors.server.engine_host import EngineHost
from tinkex_actors.server.futures import FutureStore
from tinkex_actors.server.http_errors import bad_request, forbidden, gone, not_found
from tinkex_actors.server.idempotency import IdempotencyCache
from tinkex_actors.server.rate_limit import SampleRateLimiter
from tinkex_actors.server.scheduler import Scheduler
from tinkex_actors.server.settings import ServerSettings
from tinkex_actors.server.store import CheckpointRow, RunRow, SessionRow, Store

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
        futures: FutureStore,
        idempotency: IdempotencyCache,
        loop: asyncio.AbstractEventLoop,
        rate_limiter: SampleRateLimiter | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.files = files
        self.signer = signer
        self.host = host
        self.scheduler = scheduler
        self.futures = futures
        self.idempotency = idempotency
        self.loop = loop
        #: ``--rate-limit``: per-tenant asample limits (event loop only).
        self.rate_limiter = SampleRateLimiter({}) if rate_limiter is None else rate_limiter
        self.models: dict[str, LiveModel] = {}
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
        """The tenant's session; 404 when unknown or foreign, 410 when finished (if ``active``)."""
        row = self.store.get_session(session_id)
        if row is None or row.owner != tenant:
            raise not_found(f"unknown session {session_id!r}")
        if active and row.status != "active":
            raise gone(f"session {session_id!r} was finished")
        return row

    # ------------------------------------------------------------------ models
    def live_model(self, tenant: str, model_id: str) -> LiveModel:
        """The tenant's live adapter; 404 (saying why) otherwise."""
        with self.lock:
            model = self.models.get(model_id)
        if model is not None and model.tenant == tenant:
            model.last_request_time = time.time()
            return model
        run = self.store.get_run(model_id)
        if run is not None and run.owner == tenant:
            raise not_found(
                f"model {model_id!r} is not loaded on this server (it was unloaded, its session "
                "finished, or the server restarted); restore it from a checkpoint with "
                "create_training_client_from_state(<tinker path>)"
            )
        raise not_found(f"unknown model {model_id!r}")

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
