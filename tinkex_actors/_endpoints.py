"""Every HTTP endpoint the SDK calls, each declared once (protocol §3).

An :class:`Endpoint` holds what the SDK needs to call it: the method, the path (a template
whose ``{name}`` segments :meth:`Endpoint.path` fills in, percent-encoded), the request body
type and the answer type. A :class:`QueuedEndpoint` is answered with a future: its answer
type is that of the result the future holds, and it adds the ``X-Tinker-Request-Type`` its
``retrieve_future`` polls carry. The SDK builds every URL path from these declarations and
nowhere else; ``tests/test_endpoints.py`` checks that no other module spells out an
``/api/v1`` path, that the embedded server serves every endpoint declared here and that the
paths are the official SDK's. ``docs/api/endpoints.md`` is generated from them.

Adding an endpoint: declare it here; call it from the SDK module that owns it (through
:meth:`Endpoint.path` and its types); serve it in ``tinkex_actors/server/routes/``.
"""

from __future__ import annotations

import string
from typing import Any, Final, Generic, Literal, TypeAlias, TypeVar

import attrs

from tinkex_actors import _constants as c
from tinkex_actors.transport._checks import path_segment
from tinkex_actors.types import (
    CheckpointArchiveUrlResponse,
    CheckpointsListResponse,
    CheckpointTtlRequest,
    ClientConfigRequest,
    ClientConfigResponse,
    ClientDynamicConfigResponse,
    CreateModelRequest,
    CreateModelResponse,
    CreateSamplingSessionRequest,
    CreateSamplingSessionResponse,
    CreateSessionRequest,
    CreateSessionResponse,
    ForwardBackwardOutput,
    ForwardBackwardRequest,
    FutureRetrieveRequest,
    GetInfoRequest,
    GetInfoResponse,
    GetSamplerResponse,
    GetServerCapabilitiesResponse,
    GetSessionResponse,
    HealthResponse,
    ListSessionsResponse,
    LoadWeightsRequest,
    LoadWeightsResponse,
    OptimStepRequest,
    OptimStepResponse,
    SampleRequest,
    SampleResponse,
    SaveWeightsForSamplerRequest,
    SaveWeightsForSamplerResponseInternal,
    SaveWeightsRequest,
    SaveWeightsResponse,
    SessionFinishRequest,
    SessionHeartbeatRequest,
    SessionHeartbeatResponse,
    TelemetryResponse,
    TelemetrySendRequest,
    TrainingRun,
    TrainingRunsResponse,
    UnloadModelRequest,
    UnloadModelResponse,
    WeightsInfoRequest,
    WeightsInfoResponse,
)

__all__ = [
    "ASAMPLE",
    "AUTH_TOKEN",
    "CHECKPOINT_ARCHIVE_URL",
    "CLIENT_CONFIG",
    "CREATE_MODEL",
    "CREATE_SAMPLING_SESSION",
    "CREATE_SESSION",
    "DELETE_CHECKPOINT",
    "DYNAMIC_CONFIG",
    "ENDPOINTS",
    "FINISH_SESSION",
    "FORWARD",
    "FORWARD_BACKWARD",
    "GET_INFO",
    "GET_SAMPLER",
    "GET_SERVER_CAPABILITIES",
    "GET_SESSION",
    "GET_TRAINING_RUN",
    "HEALTHZ",
    "JOIN_SAMPLING_SESSION",
    "LIST_CHECKPOINTS",
    "LIST_SESSIONS",
    "LIST_TRAINING_RUNS",
    "LIST_USER_CHECKPOINTS",
    "LOAD_WEIGHTS",
    "OPTIM_STEP",
    "PUBLISH_CHECKPOINT",
    "RETRIEVE_FUTURE",
    "RETRIEVE_FUTURES",
    "SAVE_WEIGHTS",
    "SAVE_WEIGHTS_FOR_SAMPLER",
    "SESSION_HEARTBEAT",
    "SET_CHECKPOINT_TTL",
    "TELEMETRY",
    "UNLOAD_MODEL",
    "UNPUBLISH_CHECKPOINT",
    "WEIGHTS_INFO",
    "Endpoint",
    "Method",
    "NoAnswer",
    "QueuedEndpoint",
]

R = TypeVar("R")
Method: TypeAlias = Literal["GET", "POST", "PUT", "DELETE"]
#: The ``response`` of an endpoint whose answer is empty or read by hand.
NoAnswer: Final = type(None)


@attrs.frozen
class Endpoint(Generic[R]):
    """One endpoint of the protocol, as the SDK calls it.

    Attributes:
        method: the HTTP method.
        template: the path below ``API_PREFIX``, with ``{name}`` placeholders (one path
            segment each).
        request: the body's wire type (None: no body, or one the caller builds by hand).
        response: the answer's wire type (:data:`NoAnswer`: the answer is empty or read by
            hand).
    """

    method: Method
    template: str
    request: type[Any] | None
    response: type[R]

    @property
    def params(self) -> tuple[str, ...]:
        """The path placeholders, in order."""
        return tuple(name for _, name, _, _ in string.Formatter().parse(self.template) if name)

    @property
    def route(self) -> str:
        """The full path template (``/api/v1/...``), as servers declare their routes."""
        return c.API_PREFIX + self.template

    def path(self, **params: str) -> str:
        """The URL path, each placeholder filled with its value quoted as one path segment.

        Raises:
            TypeError: the names given are not the placeholders (a programming error: callers
                check their arguments before building a path).
        """
        if params.keys() != set(self.params):
            raise TypeError(f"{self.template} takes {self.params}, got {tuple(params)}")
        return self.route.format_map({k: path_segment(v) for k, v in params.items()})

    def __str__(self) -> str:
        return f"{self.method} {self.route}"


@attrs.frozen
class QueuedEndpoint(Endpoint[R]):
    """An endpoint answered with a future (``{"request_id"}``), whose result of type
    ``response`` is polled with ``retrieve_future``.

    Attributes:
        request_type: ``X-Tinker-Request-Type`` of those polls.
    """

    request_type: str


# ------------------------------------------------------------------------------- session
CLIENT_CONFIG: Final = Endpoint("POST", "/client/config", ClientConfigRequest, ClientConfigResponse)
DYNAMIC_CONFIG: Final = Endpoint(
    "POST", "/client/dynamic_config", ClientConfigRequest, ClientDynamicConfigResponse
)
#: Body ``{}``, sent with the raw credential; the answer ``{"jwt": ...}`` is read by hand
#: (it is a secret: never decoded into a type that could show it).
AUTH_TOKEN: Final = Endpoint("POST", "/auth/token", None, NoAnswer)
CREATE_SESSION: Final = Endpoint(
    "POST", "/create_session", CreateSessionRequest, CreateSessionResponse
)
SESSION_HEARTBEAT: Final = Endpoint(
    "POST", "/session_heartbeat", SessionHeartbeatRequest, SessionHeartbeatResponse
)
FINISH_SESSION: Final = Endpoint(
    "POST", "/sessions/{session_id}/finish", SessionFinishRequest, NoAnswer
)
TELEMETRY: Final = Endpoint("POST", "/telemetry", TelemetrySendRequest, TelemetryResponse)
GET_SERVER_CAPABILITIES: Final = Endpoint(
    "GET", "/get_server_capabilities", None, GetServerCapabilitiesResponse
)
#: Unauthenticated; EmbeddedServer waits for it at start-up.
HEALTHZ: Final = Endpoint("GET", "/healthz", None, HealthResponse)

# ------------------------------------------------------------------------------- models
CREATE_MODEL: Final = QueuedEndpoint(
    "POST", "/create_model", CreateModelRequest, CreateModelResponse, "CreateModel"
)
GET_INFO: Final = Endpoint("POST", "/get_info", GetInfoRequest, GetInfoResponse)
UNLOAD_MODEL: Final = QueuedEndpoint(
    "POST", "/unload_model", UnloadModelRequest, UnloadModelResponse, "UnloadModel"
)

# ------------------------------------------------------------------------------- training
#: Protobuf bodies (``wire.encode_forward_backward_request``), optionally zstd-compressed.
FORWARD_BACKWARD: Final = QueuedEndpoint(
    "POST", "/forward_backward", ForwardBackwardRequest, ForwardBackwardOutput, "ForwardBackward"
)
#: A forward-only pass: the same endpoint and body, with ``forward_only`` set in the
#: protobuf; its polls say ``Forward``.
FORWARD: Final = QueuedEndpoint(
    "POST", "/forward_backward", ForwardBackwardRequest, ForwardBackwardOutput, "Forward"
)
OPTIM_STEP: Final = QueuedEndpoint(
    "POST", "/optim_step", OptimStepRequest, OptimStepResponse, "OptimStep"
)

# ------------------------------------------------------------------------------- weights
SAVE_WEIGHTS: Final = QueuedEndpoint(
    "POST", "/save_weights", SaveWeightsRequest, SaveWeightsResponse, "SaveWeights"
)
LOAD_WEIGHTS: Final = QueuedEndpoint(
    "POST", "/load_weights", LoadWeightsRequest, LoadWeightsResponse, "LoadWeights"
)
SAVE_WEIGHTS_FOR_SAMPLER: Final = QueuedEndpoint(
    "POST",
    "/save_weights_for_sampler",
    SaveWeightsForSamplerRequest,
    SaveWeightsForSamplerResponseInternal,
    "SaveWeightsForSampler",
)
WEIGHTS_INFO: Final = Endpoint("POST", "/weights_info", WeightsInfoRequest, WeightsInfoResponse)

# ------------------------------------------------------------------------------- sampling
CREATE_SAMPLING_SESSION: Final = Endpoint(
    "POST",
    "/create_sampling_session",
    CreateSamplingSessionRequest,
    CreateSamplingSessionResponse,
)
GET_SAMPLER: Final = Endpoint("GET", "/samplers/{sampler_id}", None, GetSamplerResponse)
ASAMPLE: Final = QueuedEndpoint("POST", "/asample", SampleRequest, SampleResponse, "Sample")
#: Called only when ``client/config`` announces ``sample_join_sampling_session``; body and
#: answer (``client_counter``) are built and read by hand.
JOIN_SAMPLING_SESSION: Final = Endpoint("POST", "/join_sampling_session", None, NoAnswer)

# ------------------------------------------------------------------------------- futures
#: The answer is the result of the future polled: its type is the ``response`` of the
#: endpoint that queued the request.
RETRIEVE_FUTURE: Final = Endpoint("POST", "/retrieve_future", FutureRetrieveRequest, NoAnswer)
#: Batched completions of one sampling session (0.38); body and answer are built and read
#: by the sampling flow.
RETRIEVE_FUTURES: Final = Endpoint("POST", "/retrieve_futures", None, NoAnswer)

# ------------------------------------------------------------------------------- REST
LIST_SESSIONS: Final = Endpoint("GET", "/sessions", None, ListSessionsResponse)
GET_SESSION: Final = Endpoint("GET", "/sessions/{session_id}", None, GetSessionResponse)
LIST_TRAINING_RUNS: Final = Endpoint("GET", "/training_runs", None, TrainingRunsResponse)
GET_TRAINING_RUN: Final = Endpoint("GET", "/training_runs/{training_run_id}", None, TrainingRun)
LIST_CHECKPOINTS: Final = Endpoint(
    "GET", "/training_runs/{training_run_id}/checkpoints", None, CheckpointsListResponse
)
LIST_USER_CHECKPOINTS: Final = Endpoint("GET", "/checkpoints", None, CheckpointsListResponse)
_CHECKPOINT: Final = "/training_runs/{training_run_id}/checkpoints/{kind}/{name}"
#: Answered 200 ``{url, expires}`` or with a redirect to the archive.
CHECKPOINT_ARCHIVE_URL: Final = Endpoint(
    "GET", _CHECKPOINT + "/archive", None, CheckpointArchiveUrlResponse
)
DELETE_CHECKPOINT: Final = Endpoint("DELETE", _CHECKPOINT, None, NoAnswer)
PUBLISH_CHECKPOINT: Final = Endpoint("POST", _CHECKPOINT + "/publish", None, NoAnswer)
UNPUBLISH_CHECKPOINT: Final = Endpoint("DELETE", _CHECKPOINT + "/publish", None, NoAnswer)
SET_CHECKPOINT_TTL: Final = Endpoint("PUT", _CHECKPOINT + "/ttl", CheckpointTtlRequest, NoAnswer)

#: Every endpoint by its name here.
ENDPOINTS: Final[dict[str, Endpoint[Any]]] = {
    name: value for name, value in globals().items() if isinstance(value, Endpoint)
}
