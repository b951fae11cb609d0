"""Fuzzing the decoders: whatever a server (or a client) sends, only typed errors come out.

Client side: random JSON and random or corrupted protobuf bytes go into ``decode_json``,
``from_jsonable``, ``decode_future_answer``, ``decode_forward_backward_output`` and
``decode_sample_response``; the only exception allowed is :class:`ResponseDecodeError`.
Server side: the same into the server's request decoders (``decode_forward_backward_request``,
the embedded server's protobuf and JSON forward_backward codecs); they may only refuse with
:class:`ValidationError` or a 400 :class:`BadRequestError`. Corrupted protobuf starts from a
valid encoding and flips, cuts, repeats or inserts bytes, so the decoder gets past the
envelope into the fields.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinkex_actors import types
from tinkex_actors.errors import (
    BadRequestError,
    RequestErrorCategory,
    ResponseDecodeError,
    ValidationError,
)
from tinkex_actors.server.codec_json import decode_forward_backward_json
from tinkex_actors.server.codec_proto import decode_forward_backward
from tinkex_actors.wire import (
    decode_forward_backward_output,
    decode_forward_backward_request,
    decode_future_answer,
    decode_json,
    decode_json_request,
    decode_sample_response,
    encode_forward_backward_output,
    encode_forward_backward_request,
    encode_sample_response,
    from_jsonable,
    to_jsonable,
)

from ._strategies import junk, tensors, valid_datums

#: ``TINKEX_FUZZ_SCALE=50`` runs fifty times the examples (a deep run, minutes).
SCALE = int(os.environ.get("TINKEX_FUZZ_SCALE", "1"))
FUZZ = settings(
    max_examples=60 * SCALE,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
JSON = "application/json"
PROTOBUF = "application/x-protobuf"

TYPE_CLASSES = sorted(
    (
        obj
        for name in types.__all__
        if inspect.isclass(obj := getattr(types, name)) and attrs.has(obj)
    ),
    key=lambda cls: cls.__name__,
)
#: What futures resolve to (the ``expected`` of decode_future_answer).
RESULTS = [
    types.ForwardBackwardOutput,
    types.SampleResponse,
    types.OptimStepResponse,
    types.SaveWeightsResponse,
    types.SaveWeightsForSamplerResponseInternal,
    types.LoadWeightsResponse,
    types.CreateModelResponse,
    types.UnloadModelResponse,
]


def json_values() -> st.SearchStrategy[Any]:
    """JSON documents: junk objects, and objects shaped like real answers with junk inside."""
    # orjson writes integers up to 64 bits; a bigger literal from a server reads back as a float.
    ints = st.integers(-(2**63), 2**64 - 1)
    leaves = st.none() | st.booleans() | ints | st.floats() | st.text(max_size=10)
    any_json = st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=10,
    )
    keys = st.sampled_from(
        [
            "type", "request_id", "queue_state", "error", "category", "status",
            "response_payload_size", "metrics", "loss_fn_outputs", "loss_fn_output_type",
            "sequences", "tokens", "logprobs", "stop_reason", "path", "model_id", "data",
            "dtype", "shape", "prompt_logprobs", "topk_prompt_logprobs",
        ]
    )  # fmt: skip
    shaped = st.dictionaries(keys, any_json, max_size=6)
    return any_json | shaped


def perturbed(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A valid JSON document with one node replaced by junk, dropped or retyped.

    Near-misses get past the outer checks, so the decoders' inner paths see the bad value.
    """

    def edit(data: st.DataObject, doc: Any) -> Any:
        nodes: list[tuple[Any, Any]] = []  # (container, key) of every node

        def walk(node: Any) -> None:
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for key, child in list(items):
                nodes.append((node, key))
                if isinstance(child, dict | list):
                    walk(child)

        if isinstance(doc, dict | list):
            walk(doc)
        if not nodes:
            return data.draw(json_values())
        container, key = data.draw(st.sampled_from(nodes))
        action = data.draw(st.sampled_from(["replace", "replace", "drop", "wrap"]))
        if action == "drop" and isinstance(container, dict):
            del container[key]
        elif action == "wrap":
            container[key] = [container[key]]
        else:
            container[key] = data.draw(json_values())
        return doc

    return st.tuples(st.data(), valid).map(lambda pair: edit(*pair))


def valid_answers() -> st.SearchStrategy[Any]:
    """JSON answers a server really sends for futures (results, try_again, failures)."""
    fb = st.lists(tensors().filter(lambda t: t.dtype == "float32"), min_size=1, max_size=2).map(
        lambda rows: types.ForwardBackwardOutput(
            loss_fn_output_type="ArrayRecord",
            loss_fn_outputs=[{"logprobs": t} for t in rows],
            metrics={"loss:sum": 1.0},
        )
    )
    sample = st.lists(st.integers(0, 2047), min_size=1, max_size=4).map(
        lambda tokens: types.SampleResponse(
            sequences=[types.SampledSequence(stop_reason="stop", tokens=tokens)],
            prompt_logprobs=[None, -0.5],
            topk_prompt_logprobs=[None, [(3, -0.5)]],
        )
    )
    fixed = st.sampled_from(
        [
            types.TryAgainResponse(request_id="r-1", queue_state="active"),
            types.RequestFailedResponse(error="boom", category=RequestErrorCategory.USER),
            types.FutureMetadataResponse(response_payload_size=10),
            types.OptimStepResponse(metrics={"grad_norm:mean": 0.5}),
            types.SaveWeightsResponse(path="tinker://r/weights/w"),
            types.SaveWeightsForSamplerResponseInternal(path="tinker://r/sampler_weights/w"),
        ]
    )
    return st.one_of(fb, sample, fixed).map(to_jsonable)


def mutated(valid: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """``valid`` bytes with a few random edits (flip, cut, repeat, insert)."""

    def edit(data: st.DataObject, body: bytes) -> bytes:
        out = bytearray(body)
        for _ in range(data.draw(st.integers(1, 4))):
            op = data.draw(st.sampled_from(["flip", "cut", "repeat", "insert", "truncate"]))
            at = data.draw(st.integers(0, max(0, len(out) - 1)))
            if op == "flip" and out:
                out[at] ^= data.draw(st.integers(1, 255))
            elif op == "cut":
                del out[at : at + data.draw(st.integers(1, 8))]
            elif op == "repeat":
                out[at:at] = out[at : at + data.draw(st.integers(1, 8))]
            elif op == "insert":
                out[at:at] = data.draw(st.binary(min_size=1, max_size=8))
            else:
                del out[at:]
        return bytes(out)

    return st.tuples(st.data(), valid).map(lambda pair: edit(*pair))


def fb_outputs() -> st.SearchStrategy[bytes]:
    """Valid ForwardBackwardOutput protobuf bodies."""
    output = st.builds(
        lambda rows, loss: types.ForwardBackwardOutput(
            loss_fn_output_type="ArrayRecord",
            loss_fn_outputs=[{"logprobs": t, "elementwise_loss": t} for t in rows],
            metrics={"loss:sum": loss},
        ),
        st.lists(tensors().filter(lambda t: t.dtype == "float32"), min_size=1, max_size=3),
        st.floats(-10, 10),
    )
    return output.map(encode_forward_backward_output)


def sample_responses() -> st.SearchStrategy[bytes]:
    """Valid SampleResponse protobuf bodies."""
    sequence = st.lists(st.integers(0, 2047), min_size=1, max_size=6).map(
        lambda tokens: types.SampledSequence(
            stop_reason="length", tokens=tokens, logprobs=[-0.5] * len(tokens)
        )
    )
    response = st.lists(sequence, min_size=1, max_size=3).map(
        lambda sequences: types.SampleResponse(sequences=sequences)
    )
    return response.map(encode_sample_response)


def fb_requests() -> st.SearchStrategy[bytes]:
    """Valid ForwardBackwardRequest protobuf bodies."""
    request = st.lists(valid_datums(), min_size=1, max_size=3).map(
        lambda data: types.ForwardBackwardRequest(
            forward_backward_input=types.ForwardBackwardInput(
                data=data, loss_fn="cross_entropy", loss_fn_config={"clip": 0.5}
            ),
            model_id="m",
            seq_id=3,
        )
    )
    return request.map(encode_forward_backward_request)


def _only_decode_errors(call: Any) -> None:
    with contextlib.suppress(ResponseDecodeError):
        call()


# ----------------------------------------------------------------------------- client side
@pytest.mark.parametrize("cls", TYPE_CLASSES, ids=lambda cls: cls.__name__)
@settings(FUZZ, max_examples=15 * SCALE)
@given(value=json_values())
def test_from_jsonable_every_type(cls: type[Any], value: Any) -> None:
    _only_decode_errors(lambda: from_jsonable(cls, value))
    _only_decode_errors(lambda: decode_json(cls, orjson.dumps(value)))


@FUZZ
@given(body=st.binary(max_size=64) | json_values().map(orjson.dumps)
       | perturbed(valid_answers()).map(orjson.dumps),
       expected=st.sampled_from(RESULTS),
       content_type=st.sampled_from([None, JSON, PROTOBUF, "text/html"]))  # fmt: skip
def test_future_answers(body: bytes, expected: type[Any], content_type: str | None) -> None:
    _only_decode_errors(lambda: decode_future_answer(expected, body, content_type))


@FUZZ
@given(body=mutated(fb_outputs()) | st.binary(max_size=64))
def test_forward_backward_output_protobuf(body: bytes) -> None:
    _only_decode_errors(lambda: decode_forward_backward_output(body))
    _only_decode_errors(lambda: decode_future_answer(types.ForwardBackwardOutput, body, PROTOBUF))


@FUZZ
@given(body=mutated(sample_responses()) | st.binary(max_size=64))
def test_sample_response_protobuf(body: bytes) -> None:
    _only_decode_errors(lambda: decode_sample_response(body))
    _only_decode_errors(lambda: decode_future_answer(types.SampleResponse, body, PROTOBUF))


@settings(FUZZ, max_examples=20 * SCALE)
@given(body=fb_outputs() | sample_responses())
def test_valid_protobuf_still_decodes(body: bytes) -> None:
    """The mutations start from bodies the decoders accept (so they test the deep paths)."""
    try:
        decode_forward_backward_output(body)
    except ResponseDecodeError:
        decode_sample_response(body)


# ----------------------------------------------------------------------------- server side
@FUZZ
@given(body=mutated(fb_requests()) | st.binary(max_size=64))
def test_forward_backward_request_protobuf(body: bytes) -> None:
    with contextlib.suppress(ValidationError):
        decode_forward_backward_request(body)
    with contextlib.suppress(BadRequestError):
        decode_forward_backward(body)


def json_requests() -> st.SearchStrategy[Any]:
    """Valid legacy JSON forward_backward bodies."""
    return st.lists(valid_datums(), min_size=1, max_size=2).map(
        lambda data: {
            "model_id": "m",
            "seq_id": 1,
            "forward_backward_input": {
                "data": [to_jsonable(d) for d in data],
                "loss_fn": "cross_entropy",
                "loss_fn_config": {"clip_low_threshold": 0.8},
            },
        }
    )


@FUZZ
@given(value=json_values() | perturbed(json_requests()), forward_only=st.booleans())
def test_forward_backward_request_json(value: Any, forward_only: bool) -> None:
    with contextlib.suppress(BadRequestError):
        decode_forward_backward_json(value, forward_only=forward_only)
    with contextlib.suppress(ValidationError):
        decode_json_request(types.ForwardBackwardRequest, orjson.dumps(value))


@FUZZ
@given(value=junk())
def test_junk_python_values_into_from_jsonable(value: Any) -> None:
    """Not only JSON: bytes, tuples, NaN and huge integers too."""
    for cls in RESULTS:
        _only_decode_errors(lambda cls=cls: from_jsonable(cls, value))


@pytest.mark.parametrize("config", [True, [1, 2], "x", 3])
def test_found_by_fuzzing_loss_fn_config_not_an_object(config: Any) -> None:
    """A non-object loss_fn_config was an AttributeError (HTTP 500, retried); now a 400."""
    body = {"model_id": "m", "forward_backward_input": {"data": [], "loss_fn_config": config}}
    with pytest.raises(BadRequestError, match="loss_fn_config"):
        decode_forward_backward_json(body, forward_only=False)
