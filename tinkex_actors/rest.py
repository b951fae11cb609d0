"""``RestClient``: sessions, training runs, checkpoints and samplers over REST (protocol §3.8).

Every method blocks and returns its typed answer; each has an ``*_async`` twin returning an
:class:`~tinkex_actors.futures.ActorFuture` completed on the client's worker pool. Arguments
are checked in the calling thread before anything is sent (a malformed ``tinker://`` path
raises :class:`~tinkex_actors.errors.InvalidTinkerPathError` at once, also from a twin).
Listings return one page with its typed :class:`~tinkex_actors.types.Cursor`; the ``iter_*``
generators walk every page. See ``docs/rest.md``.

Thread-safety: one RestClient may be shared by any number of threads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from tinkex_actors import _constants as c
from tinkex_actors import _rest_requests as req
from tinkex_actors._rest_requests import AccessScope, Call
from tinkex_actors.actors._pool import WorkerPool
from tinkex_actors.config import Config
from tinkex_actors.errors import ClientClosedError, ValidationError
from tinkex_actors.futures import ActorFuture
from tinkex_actors.transport import HTTPTransport, acquire_transport, release_transport
from tinkex_actors.types import (
    Checkpoint,
    CheckpointArchiveUrlResponse,
    CheckpointsListResponse,
    GetSamplerResponse,
    GetSessionResponse,
    ListSessionsResponse,
    TrainingRun,
    TrainingRunsResponse,
    WeightsInfoResponse,
)

__all__ = ["AccessScope", "RestClient"]

T = TypeVar("T")


class RestClient:
    """Read and manage a tenant's sessions, training runs, checkpoints and samplers.

    Usually obtained from ``ServiceClient.create_rest_client()``; may be built directly::

        with RestClient(Config.new()) as rest:
            for ckpt in rest.iter_user_checkpoints():
                print(ckpt.tinker_path)

    Args:
        config: the tenant.
        transport: an HTTP transport to use (not closed by :meth:`close`); default: the
            tenant's shared transport from ``acquire_transport``, released by :meth:`close`.
        pool: the worker pool of the ``*_async`` twins (not shut down by :meth:`close`);
            default: a small pool of this client's own.
        sleep: waits out the delay before each retry (tests pass a recorder); default: the
            transport's.

    Raises:
        ValidationError: ``config`` is not a Config.
    """

    def __init__(
        self,
        config: Config,
        *,
        transport: HTTPTransport | None = None,
        pool: WorkerPool | None = None,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        if not isinstance(config, Config):
            raise ValidationError(f"expected a Config, got {type(config).__name__}", field="config")
        self._config = config
        self._owns_transport = transport is None
        self._transport = acquire_transport(config) if transport is None else transport
        self._owns_pool = pool is None
        self._pool = WorkerPool(c.REST_POOL_WORKERS, name="tinkex-rest") if pool is None else pool
        self._sleep = sleep
        self._closed = False

    # ------------------------------------------------------------------ lifecycle
    @property
    def config(self) -> Config:
        """The tenant's configuration."""
        return self._config

    @property
    def transport(self) -> HTTPTransport:
        """The HTTP transport this client sends through (downloads stream through it too)."""
        return self._transport

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Release the transport and stop the worker pool (those this client owns).

        Idempotent. Calls already running finish; later calls raise ``ClientClosedError``.
        """
        if self._closed:
            return
        self._closed = True
        if self._owns_pool:
            self._pool.shutdown(wait=False)
        if self._owns_transport:
            release_transport(self._transport)

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"RestClient(base_url={self._config.base_url!r}, "
            f"tenant_id={self._config.tenant_id!r}, {state})"
        )

    # ------------------------------------------------------------------ sessions
    def list_sessions(
        self,
        limit: int = c.REST_SESSIONS_PAGE,
        offset: int = 0,
        *,
        access_scope: AccessScope = "owned",
    ) -> ListSessionsResponse:
        """One page of session ids (``GET /api/v1/sessions``), newest first.

        Args:
            limit: page size (default 20).
            offset: ids to skip.
            access_scope: ``"owned"`` or ``"accessible"``.
        """
        return self._run(req.list_sessions(limit, offset, access_scope))

    def list_sessions_async(
        self,
        limit: int = c.REST_SESSIONS_PAGE,
        offset: int = 0,
        *,
        access_scope: AccessScope = "owned",
    ) -> ActorFuture[ListSessionsResponse]:
        """:meth:`list_sessions` on the worker pool."""
        return self._submit(req.list_sessions(limit, offset, access_scope))

    def iter_sessions(
        self, *, page_size: int = c.REST_SESSIONS_PAGE, access_scope: AccessScope = "owned"
    ) -> Iterator[str]:
        """Every session id, fetching ``page_size`` per request until a short page."""
        size = req.page_size(page_size)
        req.list_sessions(size, 0, access_scope)  # check the arguments now, not at first next()
        return self._walk_sessions(size, access_scope)

    def _walk_sessions(self, size: int, access_scope: AccessScope) -> Iterator[str]:
        offset = 0
        while True:
            page = self.list_sessions(size, offset, access_scope=access_scope).sessions
            yield from page
            if len(page) < size:
                return
            offset += len(page)

    def get_session(
        self, session_id: str, *, access_scope: AccessScope = "owned"
    ) -> GetSessionResponse:
        """A session's training run ids and sampler ids (``GET /api/v1/sessions/{id}``)."""
        return self._run(req.get_session(session_id, access_scope))

    def get_session_async(
        self, session_id: str, *, access_scope: AccessScope = "owned"
    ) -> ActorFuture[GetSessionResponse]:
        """:meth:`get_session` on the worker pool."""
        return self._submit(req.get_session(session_id, access_scope))

    # ------------------------------------------------------------------ checkpoint listings
    def list_user_checkpoints(
        self, limit: int = c.REST_CHECKPOINTS_PAGE, offset: int = 0
    ) -> CheckpointsListResponse:
        """One page of every checkpoint of the caller's runs, newest first, with its cursor."""
        return self._run(req.list_user_checkpoints(limit, offset))

    def list_user_checkpoints_async(
        self, limit: int = c.REST_CHECKPOINTS_PAGE, offset: int = 0
    ) -> ActorFuture[CheckpointsListResponse]:
        """:meth:`list_user_checkpoints` on the worker pool."""
        return self._submit(req.list_user_checkpoints(limit, offset))

    def iter_user_checkpoints(
        self, *, page_size: int = c.REST_CHECKPOINTS_PAGE
    ) -> Iterator[Checkpoint]:
        """Every checkpoint of the caller, page after page (see :meth:`list_user_checkpoints`)."""
        size = req.page_size(page_size)
        return self._walk(lambda offset: self.list_user_checkpoints(size, offset), size)

    def list_checkpoints(
        self, training_run_id: str, *, limit: int | None = None, offset: int | None = None
    ) -> CheckpointsListResponse:
        """A training run's checkpoints, newest first.

        Without ``limit``/``offset`` the server's default page is returned (every checkpoint
        on the embedded server, up to 1000); :meth:`iter_checkpoints` walks any number.
        """
        return self._run(req.list_checkpoints(training_run_id, limit, offset))

    def list_checkpoints_async(
        self, training_run_id: str, *, limit: int | None = None, offset: int | None = None
    ) -> ActorFuture[CheckpointsListResponse]:
        """:meth:`list_checkpoints` on the worker pool."""
        return self._submit(req.list_checkpoints(training_run_id, limit, offset))

    def iter_checkpoints(
        self, training_run_id: str, *, page_size: int = c.REST_CHECKPOINTS_PAGE
    ) -> Iterator[Checkpoint]:
        """Every checkpoint of a training run, page after page."""
        size = req.page_size(page_size)
        req.list_checkpoints(training_run_id, size, 0)

        def page(offset: int) -> CheckpointsListResponse:
            return self.list_checkpoints(training_run_id, limit=size, offset=offset)

        return self._walk(page, size)

    @staticmethod
    def _walk(fetch: Callable[[int], CheckpointsListResponse], size: int) -> Iterator[Checkpoint]:
        offset = 0
        while True:
            page = fetch(offset)
            yield from page.checkpoints
            offset += len(page.checkpoints)
            done = page.cursor.total_count <= offset if page.cursor is not None else False
            if done or len(page.checkpoints) < size or not page.checkpoints:
                return

    # ------------------------------------------------------------------ one checkpoint
    def get_checkpoint_archive_url(
        self, path_or_run_id: str, checkpoint_id: str | None = None
    ) -> CheckpointArchiveUrlResponse:
        """A signed download URL for a checkpoint archive and when it expires.

        Call with a ``tinker://`` path, or with a training run id and a checkpoint id
        (``"weights/<name>"`` or ``"sampler_weights/<name>"``). The server answers 200
        ``{url, expires}`` or a redirect (its ``Location`` and ``Expires``; without
        ``Expires`` the URL is assumed to live 15 minutes). A 503 means the archive is still
        being generated: asked again after 30 s (or the server's shorter ``retry-after``), at
        most 6 times in all, then the 503 is raised.
        """
        return self._run(req.get_checkpoint_archive_url(path_or_run_id, checkpoint_id))

    def get_checkpoint_archive_url_async(
        self, path_or_run_id: str, checkpoint_id: str | None = None
    ) -> ActorFuture[CheckpointArchiveUrlResponse]:
        """:meth:`get_checkpoint_archive_url` on the worker pool."""
        return self._submit(req.get_checkpoint_archive_url(path_or_run_id, checkpoint_id))

    def get_checkpoint_archive_url_by_tinker_path(
        self, tinker_path: str
    ) -> CheckpointArchiveUrlResponse:
        """:meth:`get_checkpoint_archive_url` for a ``tinker://`` path."""
        return self._run(req.get_checkpoint_archive_url(tinker_path, None))

    def get_checkpoint_archive_url_by_tinker_path_async(
        self, tinker_path: str
    ) -> ActorFuture[CheckpointArchiveUrlResponse]:
        """:meth:`get_checkpoint_archive_url_by_tinker_path` on the worker pool."""
        return self._submit(req.get_checkpoint_archive_url(tinker_path, None))

    #: The official SDK's (0.25) name.
    get_checkpoint_archive_url_from_tinker_path = get_checkpoint_archive_url_by_tinker_path
    get_checkpoint_archive_url_from_tinker_path_async = (
        get_checkpoint_archive_url_by_tinker_path_async
    )

    def delete_checkpoint(self, path_or_run_id: str, checkpoint_id: str | None = None) -> None:
        """Delete a checkpoint and its files (by ``tinker://`` path, or run and checkpoint ids)."""
        self._run(req.delete_checkpoint(path_or_run_id, checkpoint_id))

    def delete_checkpoint_async(
        self, path_or_run_id: str, checkpoint_id: str | None = None
    ) -> ActorFuture[None]:
        """:meth:`delete_checkpoint` on the worker pool."""
        return self._submit(req.delete_checkpoint(path_or_run_id, checkpoint_id))

    def delete_checkpoint_by_tinker_path(self, tinker_path: str) -> None:
        """:meth:`delete_checkpoint` for a ``tinker://`` path."""
        self._run(req.delete_checkpoint(tinker_path, None))

    def delete_checkpoint_by_tinker_path_async(self, tinker_path: str) -> ActorFuture[None]:
        """:meth:`delete_checkpoint_by_tinker_path` on the worker pool."""
        return self._submit(req.delete_checkpoint(tinker_path, None))

    #: The official SDK's name.
    delete_checkpoint_from_tinker_path = delete_checkpoint_by_tinker_path
    delete_checkpoint_from_tinker_path_async = delete_checkpoint_by_tinker_path_async

    def publish_checkpoint(self, path_or_run_id: str, checkpoint_id: str | None = None) -> None:
        """Make a checkpoint readable (and sampleable) by every API key.

        Raises:
            ConflictError: it is already published.
        """
        self._run(req.publish_checkpoint(path_or_run_id, checkpoint_id, public=True))

    def publish_checkpoint_async(
        self, path_or_run_id: str, checkpoint_id: str | None = None
    ) -> ActorFuture[None]:
        """:meth:`publish_checkpoint` on the worker pool."""
        return self._submit(req.publish_checkpoint(path_or_run_id, checkpoint_id, public=True))

    def publish_checkpoint_from_tinker_path(self, tinker_path: str) -> None:
        """:meth:`publish_checkpoint` for a ``tinker://`` path."""
        self._run(req.publish_checkpoint(tinker_path, None, public=True))

    def publish_checkpoint_from_tinker_path_async(self, tinker_path: str) -> ActorFuture[None]:
        """:meth:`publish_checkpoint_from_tinker_path` on the worker pool."""
        return self._submit(req.publish_checkpoint(tinker_path, None, public=True))

    def unpublish_checkpoint(self, path_or_run_id: str, checkpoint_id: str | None = None) -> None:
        """Make a published checkpoint private again.

        Raises:
            ConflictError: it is not published.
        """
        self._run(req.publish_checkpoint(path_or_run_id, checkpoint_id, public=False))

    def unpublish_checkpoint_async(
        self, path_or_run_id: str, checkpoint_id: str | None = None
    ) -> ActorFuture[None]:
        """:meth:`unpublish_checkpoint` on the worker pool."""
        return self._submit(req.publish_checkpoint(path_or_run_id, checkpoint_id, public=False))

    def unpublish_checkpoint_from_tinker_path(self, tinker_path: str) -> None:
        """:meth:`unpublish_checkpoint` for a ``tinker://`` path."""
        self._run(req.publish_checkpoint(tinker_path, None, public=False))

    def unpublish_checkpoint_from_tinker_path_async(self, tinker_path: str) -> ActorFuture[None]:
        """:meth:`unpublish_checkpoint_from_tinker_path` on the worker pool."""
        return self._submit(req.publish_checkpoint(tinker_path, None, public=False))

    def set_checkpoint_ttl(
        self, training_run_id: str, checkpoint_id: str, ttl_seconds: int | None
    ) -> None:
        """Expire a checkpoint ``ttl_seconds`` from now, or never (``None`` removes the TTL).

        The server bounds the TTL (the official one: one hour to ten years).
        """
        self._run(req.set_checkpoint_ttl(training_run_id, checkpoint_id, ttl_seconds))

    def set_checkpoint_ttl_async(
        self, training_run_id: str, checkpoint_id: str, ttl_seconds: int | None
    ) -> ActorFuture[None]:
        """:meth:`set_checkpoint_ttl` on the worker pool."""
        return self._submit(req.set_checkpoint_ttl(training_run_id, checkpoint_id, ttl_seconds))

    def set_checkpoint_ttl_from_tinker_path(
        self, tinker_path: str, ttl_seconds: int | None
    ) -> None:
        """:meth:`set_checkpoint_ttl` for a ``tinker://`` path."""
        self._run(req.set_checkpoint_ttl(tinker_path, None, ttl_seconds))

    def set_checkpoint_ttl_from_tinker_path_async(
        self, tinker_path: str, ttl_seconds: int | None
    ) -> ActorFuture[None]:
        """:meth:`set_checkpoint_ttl_from_tinker_path` on the worker pool."""
        return self._submit(req.set_checkpoint_ttl(tinker_path, None, ttl_seconds))

    def get_weights_info_by_tinker_path(self, tinker_path: str) -> WeightsInfoResponse:
        """What a checkpoint holds: base model, LoRA rank, trained parts (``POST weights_info``)."""
        return self._run(req.get_weights_info(tinker_path))

    def get_weights_info_by_tinker_path_async(
        self, tinker_path: str
    ) -> ActorFuture[WeightsInfoResponse]:
        """:meth:`get_weights_info_by_tinker_path` on the worker pool."""
        return self._submit(req.get_weights_info(tinker_path))

    # ------------------------------------------------------------------ training runs
    def get_training_run(
        self, training_run_id: str, *, access_scope: AccessScope = "owned"
    ) -> TrainingRun:
        """A training run with its newest training and sampler checkpoints."""
        return self._run(req.get_training_run(training_run_id, access_scope))

    def get_training_run_async(
        self, training_run_id: str, *, access_scope: AccessScope = "owned"
    ) -> ActorFuture[TrainingRun]:
        """:meth:`get_training_run` on the worker pool."""
        return self._submit(req.get_training_run(training_run_id, access_scope))

    def get_training_run_by_tinker_path(
        self, tinker_path: str, *, access_scope: AccessScope = "owned"
    ) -> TrainingRun:
        """The training run a ``tinker://`` checkpoint path belongs to."""
        run = req.parse_tinker_path(tinker_path).training_run_id
        return self._run(req.get_training_run(run, access_scope))

    def get_training_run_by_tinker_path_async(
        self, tinker_path: str, *, access_scope: AccessScope = "owned"
    ) -> ActorFuture[TrainingRun]:
        """:meth:`get_training_run_by_tinker_path` on the worker pool."""
        run = req.parse_tinker_path(tinker_path).training_run_id
        return self._submit(req.get_training_run(run, access_scope))

    def list_training_runs(
        self,
        limit: int = c.REST_TRAINING_RUNS_PAGE,
        offset: int = 0,
        *,
        access_scope: AccessScope = "owned",
        project_id: str | None = None,
    ) -> TrainingRunsResponse:
        """One page of training runs with its cursor (``accessible`` adds others' public runs)."""
        return self._run(req.list_training_runs(limit, offset, access_scope, project_id))

    def list_training_runs_async(
        self,
        limit: int = c.REST_TRAINING_RUNS_PAGE,
        offset: int = 0,
        *,
        access_scope: AccessScope = "owned",
        project_id: str | None = None,
    ) -> ActorFuture[TrainingRunsResponse]:
        """:meth:`list_training_runs` on the worker pool."""
        return self._submit(req.list_training_runs(limit, offset, access_scope, project_id))

    def iter_training_runs(
        self,
        *,
        page_size: int = c.REST_TRAINING_RUNS_PAGE,
        access_scope: AccessScope = "owned",
        project_id: str | None = None,
    ) -> Iterator[TrainingRun]:
        """Every training run, page after page (see :meth:`list_training_runs`)."""
        size = req.page_size(page_size)
        req.list_training_runs(size, 0, access_scope, project_id)
        return self._walk_runs(size, access_scope, project_id)

    def _walk_runs(
        self, size: int, access_scope: AccessScope, project_id: str | None
    ) -> Iterator[TrainingRun]:
        offset = 0
        while True:
            page = self.list_training_runs(
                size, offset, access_scope=access_scope, project_id=project_id
            )
            yield from page.training_runs
            offset += len(page.training_runs)
            if len(page.training_runs) < size or page.cursor.total_count <= offset:
                return

    # ------------------------------------------------------------------ samplers
    def get_sampler(self, sampler_id: str) -> GetSamplerResponse:
        """A sampler's base model and weights path (``GET /api/v1/samplers/{id}``)."""
        return self._run(req.get_sampler(sampler_id))

    def get_sampler_async(self, sampler_id: str) -> ActorFuture[GetSamplerResponse]:
        """:meth:`get_sampler` on the worker pool."""
        return self._submit(req.get_sampler(sampler_id))

    # ------------------------------------------------------------------ internals
    def _submit(self, call: Call[T] | Callable[[], T]) -> ActorFuture[T]:
        if self._closed:
            raise ClientClosedError("this RestClient was closed")
        if isinstance(call, Call):
            return self._pool.submit(self._run, call)
        return self._pool.submit(call)

    def _run(self, call: Call[T]) -> T:
        if self._closed:
            raise ClientClosedError("this RestClient was closed")
        reply = self._transport.request(
            call.method,
            call.path,
            query=call.query,
            body=call.body,
            follow_redirects=not call.archive,
            policy=call.policy,
            max_retries=call.max_retries,
            sleep=self._sleep,
        )
        if call.archive:
            result: Any = req.archive_answer(reply, self._transport.url(call.path), time.time())
            return result  # type: ignore[no-any-return]
        return call.decode(reply)
