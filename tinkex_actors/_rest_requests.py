"""What each REST call sends and how its answer is decoded (protocol §3.8).

Every builder here checks its arguments and returns a :class:`Call` (nothing is sent), so bad
input raises in the caller's thread before any request, for the blocking methods of
:class:`~tinkex_actors.rest.RestClient` and their ``*_async`` twins alike. Identifiers are
percent-encoded into their path segment (``:`` kept, as the official SDK sends it); a
checkpoint id ``<kind>/<name>`` keeps its one slash.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, Final, Generic, Literal, TypeAlias, TypeVar

import attrs

from tinkex_actors import _constants as c
from tinkex_actors import _endpoints as ep
from tinkex_actors._endpoints import Endpoint, NoAnswer
from tinkex_actors.errors import ResponseDecodeError, ValidationError
from tinkex_actors.transport import QueryValue, Response, RetryPolicy
from tinkex_actors.types import (
    CheckpointArchiveUrlResponse,
    CheckpointsListResponse,
    CheckpointTtlRequest,
    GetSamplerResponse,
    GetSessionResponse,
    ListSessionsResponse,
    ParsedCheckpointTinkerPath,
    TrainingRun,
    TrainingRunsResponse,
    WeightsInfoRequest,
    WeightsInfoResponse,
)
from tinkex_actors.wire import decode_json, encode_json

__all__ = [
    "AccessScope",
    "Call",
    "archive_answer",
    "call",
    "checkpoint_target",
    "delete_checkpoint",
    "get_checkpoint_archive_url",
    "get_sampler",
    "get_session",
    "get_training_run",
    "get_weights_info",
    "list_checkpoints",
    "list_sessions",
    "list_training_runs",
    "list_user_checkpoints",
    "page_size",
    "parse_tinker_path",
    "publish_checkpoint",
    "set_checkpoint_ttl",
]

AccessScope: TypeAlias = Literal["owned", "accessible"]
T = TypeVar("T")

_KINDS: Final = ("weights", "sampler_weights", "external_weights")
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
#: The archive URL: 503 means "still being generated"; it is asked again after
#: ARCHIVE_RETRY_DELAY (or the server's shorter retry-after), ARCHIVE_MAX_ATTEMPTS times in all.
_ARCHIVE_POLICY: Final = RetryPolicy(status_delays={503: c.ARCHIVE_RETRY_DELAY})


@attrs.frozen
class Call(Generic[T]):
    """One validated REST exchange: what to send and how to read the answer."""

    method: str
    path: str
    decode: Callable[[Response], T]
    query: Mapping[str, QueryValue] | None = None
    body: bytes | None = None
    #: The archive-URL exchange: redirects are read, not followed; 503 waits (see rest.py).
    archive: bool = False
    #: Retry rules of this call (None: the transport's) and its retry budget (None:
    #: ``Config.max_retries``).
    policy: RetryPolicy | None = None
    max_retries: int | None = None


# ---------------------------------------------------------------------------- argument checks
def _identifier(value: object, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"expected a non-empty str, got {_shown(value)}", field=field)
    if "/" in value or value in (".", "..") or any(ch.isspace() or ch < " " for ch in value):
        raise ValidationError(
            f"{value!r} is not an id (no '/', whitespace or control characters)", field=field
        )
    return value


def _shown(value: object) -> str:
    return repr(value) if isinstance(value, str) else type(value).__name__


def _int(value: object, field: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValidationError(f"expected an int >= {minimum}, got {_shown(value)}", field=field)
    return value


def page_size(value: object, field: str = "page_size") -> int:
    """A positive page size (limit)."""
    return _int(value, field, 1)


def _scope(value: object) -> AccessScope:
    if value == "owned":
        return "owned"
    if value == "accessible":
        return "accessible"
    raise ValidationError(
        f"expected 'owned' or 'accessible', got {_shown(value)}", field="access_scope"
    )


def parse_tinker_path(tinker_path: object) -> ParsedCheckpointTinkerPath:
    """Parse a checkpoint path; raises ``InvalidTinkerPathError`` naming the expected form."""
    return ParsedCheckpointTinkerPath.from_tinker_path(tinker_path)  # type: ignore[arg-type]


def _checkpoint_id(value: object) -> str:
    if not isinstance(value, str):
        raise ValidationError(
            f"expected '<kind>/<name>', got {_shown(value)}", field="checkpoint_id"
        )
    kind, _, name = value.partition("/")
    if kind not in _KINDS or not name or "/" in name or name in (".", ".."):
        raise ValidationError(
            f"{value!r} is not of the form '<{'|'.join(_KINDS)}>/<name>'", field="checkpoint_id"
        )
    _identifier(name, "checkpoint_id")
    return value


def checkpoint_target(path_or_run_id: object, checkpoint_id: object | None) -> tuple[str, str]:
    """``(training_run_id, checkpoint_id)`` from a tinker path, or from the two ids."""
    if checkpoint_id is None:
        parsed = parse_tinker_path(path_or_run_id)
        return parsed.training_run_id, parsed.checkpoint_id
    return _identifier(path_or_run_id, "training_run_id"), _checkpoint_id(checkpoint_id)


def _checkpoint_path(endpoint: Endpoint[Any], path_or_run_id: object, checkpoint_id: object) -> str:
    run, ckpt = checkpoint_target(path_or_run_id, checkpoint_id)
    kind, _, name = ckpt.partition("/")
    return endpoint.path(training_run_id=run, kind=kind, name=name)


# ---------------------------------------------------------------------------- decoders
def _json(cls: type[T]) -> Callable[[Response], T]:
    def decode(reply: Response) -> T:
        try:
            return decode_json(cls, reply.content)
        except ResponseDecodeError as exc:
            exc.method, exc.path = reply.method, reply.path
            raise

    return decode


def _nothing(reply: Response) -> None:
    return None


def _decoder(endpoint: Endpoint[T]) -> Callable[[Response], T]:
    if endpoint.response is NoAnswer:
        return _nothing  # type: ignore[return-value]  # T is None: nothing to decode
    return _json(endpoint.response)


def archive_answer(reply: Response, request_url: str, now: float) -> CheckpointArchiveUrlResponse:
    """Read an archive-URL answer: 200 JSON ``{url, expires}`` or a redirect to the URL.

    A redirect's expiry comes from its ``Expires`` header, else ``now`` plus
    :data:`~tinkex_actors._constants.ARCHIVE_URL_ASSUMED_TTL`.
    """
    if reply.status_code in _REDIRECTS:
        location = reply.header("location")
        if not location:
            raise ResponseDecodeError(
                f"HTTP {reply.status_code} without a Location header",
                expected="a redirect to the archive",
                method=reply.method,
                path=reply.path,
            )
        return CheckpointArchiveUrlResponse(
            url=urllib.parse.urljoin(request_url, location),
            expires=_expires(reply.header("expires"), now),
        )
    if reply.status_code != 200:
        raise ResponseDecodeError(
            f"unexpected HTTP {reply.status_code}",
            body=reply.content,
            expected="200 with {url, expires} or a redirect",
            method=reply.method,
            path=reply.path,
        )
    return _json(CheckpointArchiveUrlResponse)(reply)


def _expires(header: str | None, now: float) -> dt.datetime:
    if header:
        try:
            when = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError, IndexError):
            when = None
        if when is not None:
            return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    return dt.datetime.fromtimestamp(now + c.ARCHIVE_URL_ASSUMED_TTL, dt.UTC)


# ---------------------------------------------------------------------------- builders
def call(
    endpoint: Endpoint[T],
    query: Mapping[str, QueryValue] | None = None,
    body: bytes | None = None,
    **ids: object,
) -> Call[T]:
    """The exchange of ``endpoint``, its placeholders filled with ``ids``.

    Each id is checked (a non-empty string without ``/``, whitespace or control characters;
    ``ValidationError`` names the placeholder); the answer is decoded as the endpoint's
    ``response`` (nothing when it has none).
    """
    path = endpoint.path(**{name: _identifier(value, name) for name, value in ids.items()})
    return Call(endpoint.method, path, _decoder(endpoint), query, body)


def _page(limit: object, offset: object) -> dict[str, QueryValue]:
    return {"limit": _int(limit, "limit", 1), "offset": _int(offset, "offset", 0)}


def list_sessions(
    limit: object, offset: object, access_scope: object
) -> Call[ListSessionsResponse]:
    """``GET /sessions``."""
    query = {**_page(limit, offset), "access_scope": _scope(access_scope)}
    return call(ep.LIST_SESSIONS, query)


def get_session(session_id: object, access_scope: object) -> Call[GetSessionResponse]:
    """``GET /sessions/{id}``."""
    sid = _identifier(session_id, "session_id")
    return call(ep.GET_SESSION, {"access_scope": _scope(access_scope)}, session_id=sid)


def list_user_checkpoints(limit: object, offset: object) -> Call[CheckpointsListResponse]:
    """``GET /checkpoints``: every checkpoint of the caller, newest first."""
    return call(ep.LIST_USER_CHECKPOINTS, _page(limit, offset))


def list_checkpoints(
    training_run_id: object, limit: object | None, offset: object | None
) -> Call[CheckpointsListResponse]:
    """``GET /training_runs/{id}/checkpoints`` (paged only when asked)."""
    run = _identifier(training_run_id, "training_run_id")
    query: dict[str, QueryValue] = {}
    if limit is not None:
        query["limit"] = _int(limit, "limit", 1)
    if offset is not None:
        query["offset"] = _int(offset, "offset", 0)
    return call(ep.LIST_CHECKPOINTS, query or None, training_run_id=run)


def get_training_run(training_run_id: object, access_scope: object) -> Call[TrainingRun]:
    """``GET /training_runs/{id}``."""
    run = _identifier(training_run_id, "training_run_id")
    query = {"access_scope": _scope(access_scope)}
    return call(ep.GET_TRAINING_RUN, query, training_run_id=run)


def list_training_runs(
    limit: object, offset: object, access_scope: object, project_id: object | None
) -> Call[TrainingRunsResponse]:
    """``GET /training_runs``."""
    query: dict[str, QueryValue] = {**_page(limit, offset), "access_scope": _scope(access_scope)}
    if project_id is not None:
        query["project_id"] = _identifier(project_id, "project_id")
    return call(ep.LIST_TRAINING_RUNS, query)


def get_checkpoint_archive_url(
    path_or_run_id: object, checkpoint_id: object | None
) -> Call[CheckpointArchiveUrlResponse]:
    """``GET .../checkpoints/{kind}/{name}/archive`` (answer read by :func:`archive_answer`)."""
    endpoint = ep.CHECKPOINT_ARCHIVE_URL
    path = _checkpoint_path(endpoint, path_or_run_id, checkpoint_id)

    def unreachable(reply: Response) -> CheckpointArchiveUrlResponse:
        raise AssertionError("archive calls are decoded by archive_answer")

    return Call(
        endpoint.method,
        path,
        unreachable,
        archive=True,
        policy=_ARCHIVE_POLICY,
        max_retries=c.ARCHIVE_MAX_ATTEMPTS - 1,
    )


def delete_checkpoint(path_or_run_id: object, checkpoint_id: object | None) -> Call[None]:
    """``DELETE .../checkpoints/{kind}/{name}``."""
    endpoint = ep.DELETE_CHECKPOINT
    path = _checkpoint_path(endpoint, path_or_run_id, checkpoint_id)
    return Call(endpoint.method, path, _nothing)


def publish_checkpoint(
    path_or_run_id: object, checkpoint_id: object | None, *, public: bool
) -> Call[None]:
    """``POST`` (publish) or ``DELETE`` (unpublish) ``.../checkpoints/{kind}/{name}/publish``."""
    endpoint = ep.PUBLISH_CHECKPOINT if public else ep.UNPUBLISH_CHECKPOINT
    path = _checkpoint_path(endpoint, path_or_run_id, checkpoint_id)
    # A 409 ("already public" / "not public") is a final answer, as for every call.
    return Call(endpoint.method, path, _nothing)


def set_checkpoint_ttl(
    path_or_run_id: object, checkpoint_id: object | None, ttl_seconds: object
) -> Call[None]:
    """``PUT .../checkpoints/{kind}/{name}/ttl`` with ``{"ttl_seconds": int | null}``."""
    endpoint = ep.SET_CHECKPOINT_TTL
    path = _checkpoint_path(endpoint, path_or_run_id, checkpoint_id)
    if ttl_seconds is not None:
        _int(ttl_seconds, "ttl_seconds", 1)
    body = encode_json(CheckpointTtlRequest(ttl_seconds=ttl_seconds))  # type: ignore[arg-type]
    return Call(endpoint.method, path, _nothing, body=body)


def get_weights_info(tinker_path: object) -> Call[WeightsInfoResponse]:
    """``POST /weights_info``."""
    parsed = parse_tinker_path(tinker_path)
    body = encode_json(WeightsInfoRequest(tinker_path=parsed.tinker_path))
    return call(ep.WEIGHTS_INFO, body=body)


def get_sampler(sampler_id: object) -> Call[GetSamplerResponse]:
    """``GET /samplers/{id}``."""
    return call(ep.GET_SAMPLER, sampler_id=sampler_id)
