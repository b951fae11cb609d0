"""Futures: the untyped future a request returns, and the answers of retrieve_future."""

from __future__ import annotations

from typing import Literal

import attrs

from tinkex_actors.errors import RequestErrorCategory
from tinkex_actors.types import _validate as v
from tinkex_actors.types._typecheck import typed

__all__ = [
    "FutureMetadataResponse",
    "FutureRetrieveRequest",
    "QueueState",
    "RequestErrorCategory",
    "RequestFailedResponse",
    "TryAgainResponse",
    "UntypedAPIFuture",
]

#: ``active``, ``paused_capacity`` or ``paused_rate_limit``; other values pass through.
QueueState = str


@attrs.frozen(kw_only=True, field_transformer=typed)
class UntypedAPIFuture:
    """The immediate answer of a future-returning request.

    Attributes:
        request_id: poll this with retrieve_future (always a JSON string on the wire).
        model_id: set by create_model.
        sample_sequence_ids: asample only: one id per sequence the result will hold.
    """

    request_id: str
    model_id: str | None = None
    sample_sequence_ids: list[str] | None = None


@attrs.frozen(kw_only=True, field_transformer=typed)
class FutureRetrieveRequest:
    """``POST /api/v1/retrieve_future``; ``allow_metadata_only`` on the first poll."""

    request_id: str = attrs.field(validator=v.str_field(nonempty=True))
    allow_metadata_only: bool = attrs.field(default=False, validator=v.bool_field())


@attrs.frozen(kw_only=True, field_transformer=typed)
class TryAgainResponse:
    """The result is not ready: poll again (the queue state says why it waits)."""

    request_id: str
    queue_state: QueueState
    queue_state_reason: str | None = None
    type: Literal["try_again"] = "try_again"


@attrs.frozen(kw_only=True, field_transformer=typed)
class RequestFailedResponse:
    """The request ran and failed; an unknown category reads as ``unknown``."""

    error: str
    category: RequestErrorCategory = RequestErrorCategory.UNKNOWN


@attrs.frozen(kw_only=True, field_transformer=typed)
class FutureMetadataResponse:
    """The result is ready but large: poll again with ``allow_metadata_only=False``."""

    response_payload_size: int
    status: Literal["complete_metadata"] = "complete_metadata"
