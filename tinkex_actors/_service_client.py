"""``ServiceClient``: one session with a Tinker server and the root of its actor tree.

Constructing a ServiceClient fetches ``client/config`` (mandatory) and
``client/dynamic_config`` (optional), creates the session, starts the ServiceActor (which
creates and supervises training and sampling clients) and the heartbeat thread. ``close()``
finishes the session and stops its own tree only, in bounded time. See ``docs/clients.md``.
"""

from __future__ import annotations

import atexit
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from tinkex_actors import _constants as c
from tinkex_actors import _endpoints as ep
from tinkex_actors._logging import get_logger
from tinkex_actors._sampling_client import SamplingClient
from tinkex_actors._scalar_checks import non_negative_int
from tinkex_actors._training_client import TrainingClient
from tinkex_actors.actors._base import ActorHandle
from tinkex_actors.actors._recovery import RecoveryState
from tinkex_actors.actors._runtime import Runtime
from tinkex_actors.actors._sampling import SamplerState
from tinkex_actors.actors._service import ServiceActor, send_to_service
from tinkex_actors.actors._session import Heartbeat, bootstrap, finish_session
from tinkex_actors.actors._tenant import Tenant, tenants
from tinkex_actors.actors._training import TrainingState
from tinkex_actors.actors._upload import SessionReporter
from tinkex_actors.actors._validate import (
    check_lora,
    check_metadata,
    check_model_name,
    check_optimizer,
    check_seconds,
    check_tinker_path,
)
from tinkex_actors.config import Config
from tinkex_actors.errors import ValidationError
from tinkex_actors.futures import ActorFuture
from tinkex_actors.recovery import DEFAULT_POLICY, RecoveryPolicy
from tinkex_actors.rest import RestClient
from tinkex_actors.transport import Backend
from tinkex_actors.types import GetServerCapabilitiesResponse, LoraConfig, OptimizerConfig
from tinkex_actors.wire import decode_json

__all__ = ["ServiceClient"]

_CAPABILITIES_PATH: Final = ep.GET_SERVER_CAPABILITIES.path()


class _Tree:
    """The closeable core of a ServiceClient (kept alive until closed, even if the facade is
    dropped: its training and sampling clients may still be in use). ``owns_session`` False:
    the tree of a restored sampling client (see ``_sampler_handles``), attached to a session
    another process owns, which closing leaves running."""

    def __init__(
        self,
        runtime: Runtime,
        tenant: Tenant,
        heartbeat: Heartbeat,
        reporter: SessionReporter | None,
        *,
        owns_session: bool = True,
    ) -> None:
        self.runtime = runtime
        self.tenant = tenant
        self.heartbeat = heartbeat
        self.reporter = reporter
        self.owns_session = owns_session
        self.lock = threading.Lock()
        self.closed = False

    def close(self, timeout: float) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        _open_trees.discard(self)
        deadline = time.monotonic() + timeout
        runtime = self.runtime
        runtime.close()
        self.heartbeat.stop()
        service = runtime.service_handle
        service_ref = service.close()
        handles = [service]
        threads = [self.heartbeat.thread]
        if service_ref is not None:
            # The ServiceActor answers what is queued (refusing: the runtime is closed), then
            # stops; after that nobody adds children.
            service_ref.stop(block=False)
            service.wait_stopped(deadline)
        for state in list(runtime.children.values()):
            ref = state.handle.close()
            state.close()
            handles.append(state.handle)
            threads.extend(state.threads())
            if ref is not None:
                ref.stop(block=False)
        if self.reporter is not None:
            self.reporter.end(max(0.0, deadline - time.monotonic()))
        if self.owns_session:
            finish_session(runtime.transport, runtime.session_id, deadline - time.monotonic())
        for handle in handles:
            handle.wait_stopped(deadline)
        current = threading.current_thread()
        for thread in threads:
            if thread is not current and thread.ident is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        tenants.release(self.tenant, max(0.0, deadline - time.monotonic()))


_open_trees: set[_Tree] = set()


@atexit.register
def _close_forgotten() -> None:
    # Daemon threads never block exit; this only finishes the sessions politely, bounded.
    for tree in list(_open_trees):
        try:
            tree.close(c.ATEXIT_CLOSE_TIMEOUT)
        except Exception:
            get_logger("service").debug("tinkex.service.atexit_close_failed")


def _resolve_config(config: Config | None, options: Mapping[str, Any]) -> Config:
    if config is not None and options:
        raise ValidationError(
            f"pass either a Config or options ({', '.join(sorted(options))}), not both",
            field="config",
        )
    if config is None:
        return Config.new(**options)
    if not isinstance(config, Config):
        raise ValidationError(f"expected a Config, got {type(config).__name__}", field="config")
    return config


class ServiceClient:
    """A session with a Tinker server: creates training and sampling clients.

    Args:
        config: the tenant's :class:`Config`; when None, ``options`` are passed to
            :meth:`Config.new` (explicit options, then the environment).
        backend: inject a transport backend (tests: faults and timing); gives this client
            a private connection pool, worker pool and rate limiter.
        sleep: inject the back-off sleep (tests); also makes the tenant private.
        max_restarts: restarts allowed per client actor within ``restart_period`` seconds
            before the client is marked failed.
        restart_period: the restart-intensity window, in seconds.
        recovery: what to do when the server loses the session, a model or a sampler (see
            :class:`~tinkex_actors.recovery.RecoveryPolicy` and ``docs/recovery.md``). None:
            sessions are recovered, lost models are not restored (their calls raise
            :class:`~tinkex_actors.errors.ModelLostError`); ``RecoveryPolicy()`` restores
            them too; ``RecoveryPolicy.off()`` recovers nothing.
        **options: :meth:`Config.new` options (``api_key=``, ``base_url=``, ...).

    Raises:
        ConfigError: bad options.
        APIError: ``client/config`` or ``create_session`` failed.

    Example::

        with ServiceClient(api_key="tml-...", base_url="http://127.0.0.1:8000") as service:
            training = service.create_lora_training_client("tinkex/tiny-llama")
            out = training.forward_backward(batch, "cross_entropy").result()

    Thread-safety: every method may be called from any thread. Several ServiceClients (of
    the same or different configs) coexist; different configs share no pools or limits.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        backend: Backend | None = None,
        sleep: Callable[[float], None] | None = None,
        max_restarts: int = c.SUPERVISOR_MAX_RESTARTS,
        restart_period: float = c.SUPERVISOR_RESTART_PERIOD,
        recovery: RecoveryPolicy | None = None,
        **options: Any,
    ) -> None:
        if recovery is not None and not isinstance(recovery, RecoveryPolicy):
            raise ValidationError(
                f"expected a RecoveryPolicy or None, got {type(recovery).__name__}",
                field="recovery",
            )
        policy = DEFAULT_POLICY if recovery is None else recovery
        config = _resolve_config(config, options)
        restarts = non_negative_int(max_restarts, "max_restarts")
        period = check_seconds(restart_period, "restart_period") or c.SUPERVISOR_RESTART_PERIOD
        tenant = tenants.acquire(config, backend=backend, sleep=sleep)
        try:
            info = bootstrap(tenant.transport, config)
        except BaseException:
            tenants.release(tenant, c.ACTOR_STOP_TIMEOUT)
            raise
        runtime = Runtime(config, tenant, info.session_id, info.announced, sleep=sleep)
        handle = ActorHandle("service", info.session_id)
        runtime.service_handle = handle
        ServiceActor.start(runtime, handle, restarts, period)
        recovering = RecoveryState(runtime, ActorHandle("recovery", info.session_id), policy)
        started: ActorFuture[RecoveryState] = send_to_service(
            runtime, ServiceActor.start_recovery, (recovering,)
        )
        started.result(c.ACTOR_STOP_TIMEOUT)
        heartbeat = Heartbeat(
            tenant.transport,
            info.session_id,
            config.heartbeat_interval,
            on_gone=recovering.session_gone,
        )
        recovering.heartbeat = heartbeat
        runtime.recovery = recovering
        heartbeat.start()
        reporter = SessionReporter(runtime) if config.telemetry_enabled else None
        if reporter is not None:
            reporter.start()
        self._runtime = runtime
        self._tree = _Tree(runtime, tenant, heartbeat, reporter)
        _open_trees.add(self._tree)

    @classmethod
    def start_link(cls, config: Config | None = None, **kwargs: Any) -> ServiceClient:
        """Start a ServiceClient (the Tinkex spelling of the constructor)."""
        return cls(config, **kwargs)

    # ------------------------------------------------------------------ identity
    @property
    def config(self) -> Config:
        """The tenant's configuration."""
        return self._runtime.config

    @property
    def session_id(self) -> str:
        """The server session id."""
        return self._runtime.session_id

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._runtime.closed

    @property
    def recovery(self) -> RecoveryPolicy:
        """The recovery policy (see ``docs/recovery.md``)."""
        recovering = self._runtime.recovery
        return DEFAULT_POLICY if recovering is None else recovering.policy

    # ------------------------------------------------------------------ training clients
    def create_lora_training_client_async(
        self,
        base_model: str,
        lora_config: LoraConfig | Mapping[str, Any] | None = None,
        user_metadata: Mapping[str, str] | None = None,
        *,
        optimizer: OptimizerConfig | Mapping[str, Any] | None = None,
    ) -> ActorFuture[TrainingClient]:
        """Create a LoRA model on the server; a future of its :class:`TrainingClient`.

        Args:
            base_model: the model to fine-tune (see :meth:`get_server_capabilities`).
            lora_config: adapter settings; default rank 32 with every layer group trained.
            user_metadata: ``str -> str`` metadata recorded with the training run.
            optimizer: the model's optimizer family, fixed for its lifetime:
                ``OptimizerConfig()`` (AdamW, the default) or ``OptimizerConfig(type="dimuon")``;
                ``optim_step`` then takes the matching ``AdamParams`` / ``DimuonParams``.
        """
        self._runtime.check_open()
        check_model_name(base_model)
        lora = check_lora(lora_config) or LoraConfig(rank=c.DEFAULT_LORA_RANK)
        metadata = check_metadata(user_metadata)
        family = check_optimizer(optimizer)
        created: ActorFuture[TrainingState] = send_to_service(
            self._runtime,
            ServiceActor.start_training,
            ("create", (base_model, lora, metadata, family)),
        )
        return created.map(TrainingClient)

    def create_lora_training_client(
        self,
        base_model: str,
        lora_config: LoraConfig | Mapping[str, Any] | None = None,
        user_metadata: Mapping[str, str] | None = None,
        *,
        timeout: float | None = None,
        optimizer: OptimizerConfig | Mapping[str, Any] | None = None,
    ) -> TrainingClient:
        """Blocking :meth:`create_lora_training_client_async` (waits up to ``timeout`` s)."""
        seconds = check_seconds(timeout, "timeout")
        return self.create_lora_training_client_async(
            base_model, lora_config, user_metadata, optimizer=optimizer
        ).result(seconds)

    def create_training_client_from_state_async(
        self, path: str, user_metadata: Mapping[str, str] | None = None
    ) -> ActorFuture[TrainingClient]:
        """A new model holding checkpoint ``path``'s weights (fresh optimizer state)."""
        return self._from_state(path, user_metadata, optimizer=False)

    def create_training_client_from_state_with_optimizer_async(
        self, path: str, user_metadata: Mapping[str, str] | None = None
    ) -> ActorFuture[TrainingClient]:
        """A new model holding checkpoint ``path``'s weights and optimizer state."""
        return self._from_state(path, user_metadata, optimizer=True)

    def create_training_client_from_state(
        self,
        path: str,
        user_metadata: Mapping[str, str] | None = None,
        *,
        timeout: float | None = None,
    ) -> TrainingClient:
        """Blocking :meth:`create_training_client_from_state_async`."""
        seconds = check_seconds(timeout, "timeout")
        return self.create_training_client_from_state_async(path, user_metadata).result(seconds)

    def create_training_client_from_state_with_optimizer(
        self,
        path: str,
        user_metadata: Mapping[str, str] | None = None,
        *,
        timeout: float | None = None,
    ) -> TrainingClient:
        """Blocking :meth:`create_training_client_from_state_with_optimizer_async`."""
        seconds = check_seconds(timeout, "timeout")
        return self.create_training_client_from_state_with_optimizer_async(
            path, user_metadata
        ).result(seconds)

    def _from_state(
        self, path: str, user_metadata: Mapping[str, str] | None, *, optimizer: bool
    ) -> ActorFuture[TrainingClient]:
        self._runtime.check_open()
        checked = check_tinker_path(path, "path")
        metadata = check_metadata(user_metadata)
        created: ActorFuture[TrainingState] = send_to_service(
            self._runtime, ServiceActor.start_training, ("load", (checked, optimizer, metadata))
        )
        return created.map(TrainingClient)

    # ------------------------------------------------------------------ sampling clients
    def create_sampling_client_async(
        self, base_model: str | None = None, model_path: str | None = None
    ) -> ActorFuture[SamplingClient]:
        """A future of a :class:`SamplingClient` over a base model or saved weights.

        Give ``base_model``, or ``model_path`` (``tinker://.../sampler_weights/...``), or
        both (the server checks they match).
        """
        self._runtime.check_open()
        if base_model is None and model_path is None:
            raise ValidationError("give base_model or model_path", field="base_model")
        if base_model is not None:
            check_model_name(base_model)
        if model_path is not None:
            check_tinker_path(model_path, "model_path")
        created: ActorFuture[SamplerState] = send_to_service(
            self._runtime, ServiceActor.start_sampling, (base_model, model_path, None)
        )
        return created.map(SamplingClient)

    def create_sampling_client(
        self,
        base_model: str | None = None,
        model_path: str | None = None,
        *,
        timeout: float | None = None,
    ) -> SamplingClient:
        """Blocking :meth:`create_sampling_client_async`."""
        seconds = check_seconds(timeout, "timeout")
        return self.create_sampling_client_async(base_model, model_path).result(seconds)

    # ------------------------------------------------------------------ server
    def get_server_capabilities_async(self) -> ActorFuture[GetServerCapabilitiesResponse]:
        """A future of the models the server supports."""
        self._runtime.check_open()
        transport = self._runtime.transport

        def fetch() -> GetServerCapabilitiesResponse:
            reply = transport.request("GET", _CAPABILITIES_PATH)
            return decode_json(GetServerCapabilitiesResponse, reply.content)

        return self._runtime.pool.submit(fetch)

    def get_server_capabilities(
        self, *, timeout: float | None = None
    ) -> GetServerCapabilitiesResponse:
        """The models the server supports (blocking)."""
        seconds = check_seconds(timeout, "timeout")
        return self.get_server_capabilities_async().result(seconds)

    def create_rest_client(self) -> RestClient:
        """A :class:`~tinkex_actors.RestClient` for this tenant (runs, checkpoints, sessions).

        It shares this client's connection pool (equal configs share one) but has its own
        lifetime: close it separately.
        """
        self._runtime.check_open()
        if self._runtime.tenant.private:
            return RestClient(self.config, transport=self._runtime.transport)
        return RestClient(self.config)

    # ------------------------------------------------------------------ lifecycle
    def close(self, timeout: float | None = c.ACTOR_STOP_TIMEOUT) -> None:
        """Finish the session and stop this client's tree, within about ``timeout`` seconds.

        Pending calls of its training and sampling clients fail at once with
        ClientClosedError; later calls raise it. Requests already on the server run to
        completion there (their results are dropped); the server releases the session's
        models once their queued work is done. Joins every thread of the tree (actors,
        heartbeat, and the tenant's workers when this was the tenant's last client).
        Idempotent; never raises for a failed session finish (it is logged).
        """
        self._tree.close(check_seconds(timeout, "timeout") or c.ACTOR_STOP_TIMEOUT)

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return (
            f"ServiceClient(session_id={self.session_id!r}, "
            f"tenant_id={self.config.tenant_id!r}, {state})"
        )
