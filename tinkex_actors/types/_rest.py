"""REST resources: training runs, checkpoints, sessions, samplers, and ``tinker://`` paths."""

from __future__ import annotations

import datetime as dt
from typing import Final, Literal, TypeAlias

import attrs

from tinkex_actors._constants import TINKER_SCHEME
from tinkex_actors.errors import InvalidTinkerPathError
from tinkex_actors.types import _validate as v
from tinkex_actors.types._typecheck import typed

__all__ = [
    "Checkpoint",
    "CheckpointArchiveUrlResponse",
    "CheckpointTtlRequest",
    "CheckpointType",
    "CheckpointsListResponse",
    "Cursor",
    "GetSessionResponse",
    "ListSessionsResponse",
    "ParsedCheckpointTinkerPath",
    "TrainingRun",
    "TrainingRunsResponse",
]

CheckpointType: TypeAlias = Literal["training", "sampler", "external"]

#: Path segment of each checkpoint kind in ``tinker://<run>/<segment>/<name>``.
_SEGMENT_TO_TYPE: Final[dict[str, CheckpointType]] = {
    "weights": "training",
    "sampler_weights": "sampler",
    "external_weights": "external",
}
_EXPECTED_FORM: Final = (
    "tinker://<training_run_id>/<weights|sampler_weights|external_weights>/<name>"
)


@attrs.frozen(kw_only=True, field_transformer=typed)
class Cursor:
    """Where a page sits in a listing."""

    offset: int
    limit: int
    total_count: int


@attrs.frozen(kw_only=True, field_transformer=typed)
class Checkpoint:
    """A saved checkpoint of a training run."""

    checkpoint_id: str
    checkpoint_type: CheckpointType
    time: dt.datetime
    tinker_path: str
    size_bytes: int | None = None
    public: bool = False
    user_metadata: dict[str, str] | None = None
    expires_at: dt.datetime | None = None


@attrs.frozen(kw_only=True, field_transformer=typed)
class TrainingRun:
    """A training run (a model): its base model, owner, LoRA rank, latest checkpoints."""

    training_run_id: str
    base_model: str
    model_owner: str
    is_lora: bool
    last_request_time: dt.datetime
    corrupted: bool = False
    lora_rank: int | None = None
    last_checkpoint: Checkpoint | None = None
    last_sampler_checkpoint: Checkpoint | None = None
    user_metadata: dict[str, str] | None = None


@attrs.frozen(kw_only=True, field_transformer=typed)
class TrainingRunsResponse:
    """``GET /api/v1/training_runs``."""

    training_runs: list[TrainingRun]
    cursor: Cursor


@attrs.frozen(kw_only=True, field_transformer=typed)
class CheckpointsListResponse:
    """``GET /api/v1/checkpoints`` and ``GET /api/v1/training_runs/{id}/checkpoints``."""

    checkpoints: list[Checkpoint]
    cursor: Cursor | None = None


@attrs.frozen(kw_only=True, field_transformer=typed)
class ListSessionsResponse:
    """``GET /api/v1/sessions``: session ids."""

    sessions: list[str]


@attrs.frozen(kw_only=True, field_transformer=typed)
class GetSessionResponse:
    """``GET /api/v1/sessions/{id}``: the session's training runs and samplers."""

    training_run_ids: list[str]
    sampler_ids: list[str]
    user_metadata: dict[str, str] | None = None
    display_name: str | None = None


@attrs.frozen(kw_only=True, field_transformer=typed)
class CheckpointArchiveUrlResponse:
    """A signed download URL for a checkpoint archive and when it stops working."""

    url: str
    expires: dt.datetime


@attrs.frozen(kw_only=True, field_transformer=typed)
class CheckpointTtlRequest:
    """Body of ``PUT .../checkpoints/{id}/ttl``: seconds to live, or null to keep forever."""

    ttl_seconds: int | None = attrs.field(
        default=None, validator=v.int_field(minimum=1, optional=True), metadata=v.SEND_NULL
    )


@attrs.frozen(kw_only=True, field_transformer=typed)
class ParsedCheckpointTinkerPath:
    """The parts of ``tinker://<training_run_id>/<kind>/<name>``.

    ``checkpoint_id`` is ``"<kind>/<name>"`` (what the REST checkpoint routes take).
    """

    tinker_path: str
    training_run_id: str
    checkpoint_type: CheckpointType
    checkpoint_id: str

    @classmethod
    def from_tinker_path(cls, tinker_path: str) -> ParsedCheckpointTinkerPath:
        """Parse a checkpoint path.

        Raises:
            InvalidTinkerPathError: anything but
                ``tinker://<run>/<weights|sampler_weights|external_weights>/<name>``.
        """
        if not isinstance(tinker_path, str):
            raise InvalidTinkerPathError(
                f"expected a string of the form {_EXPECTED_FORM}, got {v.type_name(tinker_path)}",
                field="tinker_path",
            )
        parts = tinker_path[len(TINKER_SCHEME) :].split("/")
        if (
            not tinker_path.startswith(TINKER_SCHEME)
            or len(parts) != 3
            or parts[1] not in _SEGMENT_TO_TYPE
            or not parts[0]
            or not parts[2]
        ):
            raise InvalidTinkerPathError(
                f"{tinker_path!r} is not of the form {_EXPECTED_FORM}", field="tinker_path"
            )
        run_id, segment, name = parts
        return cls(
            tinker_path=tinker_path,
            training_run_id=run_id,
            checkpoint_type=_SEGMENT_TO_TYPE[segment],
            checkpoint_id=f"{segment}/{name}",
        )
