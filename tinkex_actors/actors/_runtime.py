"""``Runtime``: what every actor and worker task of one ServiceClient's tree shares.

One Runtime per ServiceClient: the tenant's resources, the session id, what the server
announced in ``client/config``, the per-session counters, the closed flag, and the handles of
the live children. Immutable after construction except the counters (atomic
``itertools.count``), the closed flag (set once), ``children`` (mutated only by the
ServiceActor's thread; read by ``close()`` after that thread stopped) and, when the server lost
the session, ``session_id`` (replaced by the recovery actor: readers take it once per request)
and ``session_lost`` (set once session recovery gave up). The counters are never reset, not
even for a new session, so a model or sampler id drawn just before a session changed can
never collide with one drawn after.
"""

from __future__ import annotations

import importlib.util
import itertools
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from tinkex_actors._chunking import ChunkLimits
from tinkex_actors.actors._tenant import Tenant
from tinkex_actors.config import Config
from tinkex_actors.errors import ClientClosedError, SessionLostError
from tinkex_actors.types import ClientConfigResponse

if TYPE_CHECKING:
    from tinkex_actors.actors._base import ActorHandle
    from tinkex_actors.actors._recovery import RecoveryState

__all__ = ["Runtime", "chunk_limits"]


def chunk_limits(config: Config, announced: ClientConfigResponse) -> ChunkLimits:
    """Chunk limits: the server's ``client/config`` values when announced, else the Config's."""
    max_datums = announced.fwdbwd_max_chunk_len or config.max_chunk_datums
    if announced.fwdbwd_max_chunk_bytes_count is not None:
        return ChunkLimits(
            max_datums=max_datums,
            max_tokens=None,
            max_bytes=announced.fwdbwd_max_chunk_bytes_count,
        )
    return ChunkLimits(max_datums=max_datums, max_tokens=config.max_chunk_tokens)


class Runtime:
    """The shared context of one ServiceClient's actor tree.

    Args:
        config: the tenant's configuration.
        tenant: the tenant's shared resources.
        session_id: the server session.
        announced: the server's ``client/config`` answer.
        sleep: injected sleep for back-off waits (tests); default waits are cut short by
            ``close()``.
    """

    def __init__(
        self,
        config: Config,
        tenant: Tenant,
        session_id: str,
        announced: ClientConfigResponse,
        *,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.config = config
        self.tenant = tenant
        self.transport = tenant.transport
        self.pool = tenant.pool
        self.session_id = session_id
        self.announced = announced
        self.chunk_limits = chunk_limits(config, announced)
        # zstd request bodies only when the server asks and the optional package is there;
        # an uncompressed body is always acceptable.
        self.compress = bool(
            announced.proto_compress_fwdbwd and importlib.util.find_spec("zstandard") is not None
        )
        self.closed = False
        self._closed_event = threading.Event()
        #: The sleep injected by tests (fault timing), or None for real, interruptible waits.
        self.injected_sleep = sleep
        self._model_seq = itertools.count()
        self._sampling_seq = itertools.count()
        # handle id -> TrainingState | SamplerState of every live child.
        self.children: dict[int, Any] = {}
        self.service_handle: ActorHandle = cast("ActorHandle", None)  # set once started
        #: The tree's recovery (session, model and sampler re-binding); None in bare runtimes.
        self.recovery: RecoveryState | None = None
        #: Set once the session is gone for good (recovery off or given up).
        self.session_lost: SessionLostError | None = None

    # ------------------------------------------------------------------ counters
    def next_model_seq_id(self) -> int:
        """The next ``model_seq_id`` of the session (from 0). Atomic."""
        return next(self._model_seq)

    def next_sampling_session_seq_id(self) -> int:
        """The next ``sampling_session_seq_id`` of the session (from 0). Atomic."""
        return next(self._sampling_seq)

    # ------------------------------------------------------------------ closing
    def is_closed(self) -> bool:
        """Whether the ServiceClient closed."""
        return self.closed

    def check_open(self) -> None:
        """Raise ClientClosedError once the ServiceClient closed, SessionLostError once its
        session is gone for good."""
        if self.closed:
            raise ClientClosedError("the ServiceClient was closed; create a new one")
        if self.session_lost is not None:
            raise self.session_lost

    def close(self) -> None:
        """Mark the tree closed and wake every back-off wait."""
        self.closed = True
        self._closed_event.set()

    def wait(self, seconds: float) -> bool:
        """Wait ``seconds`` (cut short by close); returns True when the client closed."""
        if seconds <= 0:
            return self.closed
        if self.injected_sleep is not None:
            self.injected_sleep(seconds)
            return self.closed
        return self._closed_event.wait(seconds)
