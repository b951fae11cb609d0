"""Wire codecs: JSON for every request and result, protobuf for forward_backward and sampling.

JSON (``encode_json`` / ``decode_json``) goes through the one cattrs converter and orjson and
matches the official SDK's bodies. Protobuf (``tinker_public_pb2``, wire-identical to upstream's
``tinker_public`` schema) carries forward/forward_backward requests and the results of
forward_backward and asample. Decoders of server answers raise ``ResponseDecodeError``;
decoders of requests (for servers) raise ``ValidationError``. See ``docs/types.md``.
"""

from __future__ import annotations

from tinkex_actors.wire._future import FutureAnswer, decode_future_answer
from tinkex_actors.wire._json import (
    decode_json,
    decode_json_request,
    encode_json,
    from_jsonable,
    to_jsonable,
)
from tinkex_actors.wire._proto_request import (
    decode_forward_backward_request,
    encode_forward_backward_request,
    seal_forward_backward,
)
from tinkex_actors.wire._proto_response import (
    decode_forward_backward_output,
    decode_sample_response,
    encode_forward_backward_output,
    encode_sample_response,
)

__all__ = [
    "FutureAnswer",
    "decode_forward_backward_output",
    "decode_forward_backward_request",
    "decode_future_answer",
    "decode_json",
    "decode_json_request",
    "decode_sample_response",
    "encode_forward_backward_output",
    "encode_forward_backward_request",
    "encode_json",
    "encode_sample_response",
    "from_jsonable",
    "seal_forward_backward",
    "to_jsonable",
]
