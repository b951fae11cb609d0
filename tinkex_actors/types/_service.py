"""Service and session endpoints: client config, sessions, heartbeat, capabilities, health."""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

import attrs

from tinkex_actors import _constants as c
from tinkex_actors.types import _validate as v
from tinkex_actors.types._typecheck import typed

__all__ = [
    "ClientConfigRequest",
    "ClientConfigResponse",
    "ClientDynamicConfigResponse",
    "ClientSessionFinishReason",
    "CreateSessionRequest",
    "CreateSessionResponse",
    "GetServerCapabilitiesResponse",
    "HealthResponse",
    "SessionFinishRequest",
    "SessionFinishStatus",
    "SessionHeartbeatRequest",
    "SessionHeartbeatResponse",
    "SupportedModel",
]


@attrs.frozen(kw_only=True, field_transformer=typed)
class ClientConfigRequest:
    """Body of ``POST /api/v1/client/config`` and ``/api/v1/client/dynamic_config``."""

    sdk_version: str = attrs.field(default=c.WIRE_SDK_VERSION, validator=v.str_field(nonempty=True))


@attrs.frozen(kw_only=True, field_transformer=typed)
class ClientConfigResponse:
    """Feature flags and limits a server announces once per client (every field optional).

    Defaults are what the official SDK assumes for a missing flag, except the two
    forward_backward chunk limits: ``None`` there means "not announced", and chunking then
    uses the seed limits (``_constants.CHUNK_MAX_DATUMS`` datums and
    ``CHUNK_MAX_TOKENS`` tokens; see ``tinkex_actors._chunking.ChunkLimits``).
    """

    pjwt_auth_enabled: bool = False
    credential_default_source: str = "api_key"
    sample_dispatch_bytes_semaphore_size: int = c.CONFIG_SAMPLE_DISPATCH_BYTES
    inflight_response_bytes_semaphore_size: int = c.CONFIG_INFLIGHT_RESPONSE_BYTES
    parallel_fwdbwd_chunks: bool = True
    proto_compress_fwdbwd: bool = False
    fwdbwd_max_chunk_len: int | None = attrs.field(
        default=None, validator=v.int_field(minimum=1, optional=True)
    )
    fwdbwd_max_chunk_bytes_count: int | None = attrs.field(
        default=None, validator=v.int_field(minimum=1, optional=True)
    )
    fwdbwd_dispatch_bytes_semaphore_size: int = c.CONFIG_FWDBWD_DISPATCH_BYTES
    billing_exception_max_pause_duration_sec: int = c.CONFIG_BILLING_MAX_PAUSE
    sample_no_retries: bool = False
    sample_enable_stuck_detection: bool = True
    sample_max_concurrent_requests: int = c.CONFIG_SAMPLE_MAX_CONCURRENT
    use_pyqwest_transport: bool = True
    sample_use_retrieve_futures: bool = False
    custom_loss_server_side: bool = False
    sample_join_sampling_session: bool = False


@attrs.frozen(kw_only=True, field_transformer=typed)
class ClientDynamicConfigResponse:
    """Flags a server may change while a client runs (re-fetched every refresh interval)."""

    refresh_interval_sec: int = c.CONFIG_REFRESH_INTERVAL
    sample_cancel_enabled: bool = False
    sample_cancel_max_batch_size: int = c.CONFIG_SAMPLE_CANCEL_BATCH


@attrs.frozen(kw_only=True, field_transformer=typed)
class CreateSessionRequest:
    """``POST /api/v1/create_session``."""

    tags: list[str] = attrs.field(factory=list, validator=v.str_list())
    user_metadata: dict[str, Any] = attrs.field(factory=dict, validator=v.str_mapping())
    sdk_version: str = attrs.field(default=c.WIRE_SDK_VERSION, validator=v.str_field(nonempty=True))
    project_id: str | None = attrs.field(default=None, validator=v.str_field(optional=True))
    display_name: str | None = attrs.field(default=None, validator=v.str_field(optional=True))
    type: Literal["create_session"] = attrs.field(
        default="create_session", validator=v.one_of(("create_session",))
    )


@attrs.frozen(kw_only=True, field_transformer=typed)
class CreateSessionResponse:
    """Answer of create_session; the messages are meant to be logged."""

    session_id: str
    info_message: str | None = None
    warning_message: str | None = None
    error_message: str | None = None
    type: Literal["create_session"] = "create_session"


@attrs.frozen(kw_only=True, field_transformer=typed)
class SessionHeartbeatRequest:
    """``POST /api/v1/session_heartbeat``."""

    session_id: str = attrs.field(validator=v.str_field(nonempty=True))
    type: Literal["session_heartbeat"] = attrs.field(
        default="session_heartbeat", validator=v.one_of(("session_heartbeat",))
    )


@attrs.frozen(kw_only=True, field_transformer=typed)
class SessionHeartbeatResponse:
    """Answer of session_heartbeat (``{}`` is fine)."""

    type: Literal["session_heartbeat"] = "session_heartbeat"


SessionFinishStatus: TypeAlias = Literal["success", "errored", "interrupted"]


@attrs.frozen(kw_only=True, field_transformer=typed)
class ClientSessionFinishReason:
    """Why the client ends a session."""

    type: SessionFinishStatus = attrs.field(
        default="success", validator=v.one_of(("success", "errored", "interrupted"))
    )


@attrs.frozen(kw_only=True, field_transformer=typed)
class SessionFinishRequest:
    """Body of ``POST /api/v1/sessions/{session_id}/finish`` (``detail`` is sent even if null)."""

    reason: ClientSessionFinishReason = attrs.field(
        factory=ClientSessionFinishReason, validator=v.instance_of(ClientSessionFinishReason)
    )
    detail: str | None = attrs.field(
        default=None, validator=v.str_field(optional=True), metadata=v.SEND_NULL
    )


@attrs.frozen(kw_only=True, field_transformer=typed)
class SupportedModel:
    """A base model a server offers."""

    model_name: str | None = None
    max_context_length: int | None = None
    trainable: bool | None = None
    sampleable: bool | None = None


@attrs.frozen(kw_only=True, field_transformer=typed)
class GetServerCapabilitiesResponse:
    """``GET /api/v1/get_server_capabilities``."""

    supported_models: list[SupportedModel]

    @property
    def model_names(self) -> list[str]:
        """Names of the supported models that have one."""
        return [m.model_name for m in self.supported_models if m.model_name is not None]


@attrs.frozen(kw_only=True, field_transformer=typed)
class HealthResponse:
    """``GET /api/v1/healthz``."""

    status: Literal["ok"]
