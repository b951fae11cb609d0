"""Reading a retrieve_future answer: not ready, failed, metadata only, or the result."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson

from tinkex_actors._constants import CONTENT_PROTOBUF
from tinkex_actors.errors import ResponseDecodeError
from tinkex_actors.types._futures import (
    FutureMetadataResponse,
    RequestFailedResponse,
    TryAgainResponse,
)
from tinkex_actors.types._sampling import SampleResponse
from tinkex_actors.types._training import ForwardBackwardOutput
from tinkex_actors.wire._json import from_jsonable
from tinkex_actors.wire._proto_response import (
    decode_forward_backward_output,
    decode_sample_response,
)

__all__ = ["FutureAnswer", "decode_future_answer"]

T = TypeVar("T")

FutureAnswer = TryAgainResponse | FutureMetadataResponse | RequestFailedResponse


def decode_future_answer(
    expected: type[T], body: bytes, content_type: str | None = None
) -> T | FutureAnswer:
    """Decode a 200 answer of ``retrieve_future`` for a future whose result is ``expected``.

    * ``Content-Type`` containing ``application/x-protobuf``: the result, decoded as protobuf
      (only ForwardBackwardOutput and SampleResponse travel that way);
    * JSON ``{"type": "try_again", ...}``: :class:`TryAgainResponse` (poll again);
    * JSON with an ``"error"`` key: :class:`RequestFailedResponse`;
    * JSON ``{"status": "complete_metadata", ...}``: :class:`FutureMetadataResponse` (poll
      again with ``allow_metadata_only=False``);
    * any other JSON: the result, decoded as ``expected`` (ForwardBackwardOutput and
      SampleResponse are accepted in their legacy JSON shapes too).

    Raises:
        ResponseDecodeError: the body does not decode as any of these.
    """
    if content_type is not None and CONTENT_PROTOBUF in content_type.lower():
        if expected is ForwardBackwardOutput:
            result: Any = decode_forward_backward_output(body)
            return result  # type: ignore[no-any-return]
        if expected is SampleResponse:
            result = decode_sample_response(body)
            return result  # type: ignore[no-any-return]
        raise ResponseDecodeError(
            f"got a protobuf body but {getattr(expected, '__name__', expected)} travels as JSON",
            body=body[:200].hex(" "),
            expected=f"{getattr(expected, '__name__', expected)} (JSON)",
        )
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ResponseDecodeError(
            f"body is not valid JSON ({exc})", body=body, expected="a retrieve_future answer"
        ) from exc
    if isinstance(data, dict):
        if data.get("type") == "try_again":
            return from_jsonable(TryAgainResponse, data)
        if "error" in data:
            return from_jsonable(RequestFailedResponse, data)
        if data.get("status") == "complete_metadata":
            return from_jsonable(FutureMetadataResponse, data)
    return from_jsonable(expected, data)
