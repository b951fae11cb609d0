"""Server codecs against the official SDK's own converters (the wire oracle)."""

from __future__ import annotations

import numpy as np
import pytest
from tinker import types
from tinker.proto.request_conv import forward_backward_request_to_proto
from tinker.proto.response_conv import (
    deserialize_forward_backward_output,
    deserialize_sample_response,
)

from tinkex_actors.errors import BadRequestError
from tinkex_actors.server.codec_json import (
    decode_forward_backward_json,
    encode_forward_backward_json,
    encode_sample_json,
)
from tinkex_actors.server.codec_proto import (
    decode_forward_backward,
    encode_forward_backward,
    encode_sample,
)
from tinkex_actors.server.engine_api import ForwardBackwardResult, SampledSeq, SampleResult


def _sdk_request() -> bytes:
    dense = types.Datum(
        model_input=types.ModelInput.from_ints([1, 2, 3]),
        loss_fn_inputs={"target_tokens": [2, 3, 4], "weights": [1.0, 0.5, 0.0]},
    )
    sparse_targets = types.TensorData(
        data=[7, 9],
        dtype="int64",
        shape=[2, 3],
        sparse_crow_indices=[0, 1, 2],
        sparse_col_indices=[2, 0],
    )
    sparse = types.Datum(
        model_input=types.ModelInput.from_ints([5, 6]),
        loss_fn_inputs={"target_tokens": sparse_targets, "advantages": [0.25, -1.0]},
    )
    request = types.ForwardBackwardRequest(
        forward_backward_input=types.ForwardBackwardInput(
            data=[dense, sparse], loss_fn="ppo", loss_fn_config={"clip_low_threshold": 0.7}
        ),
        model_id="run:train:0",
        seq_id=4,
    )
    return forward_backward_request_to_proto(request).SerializeToString()


def test_decodes_the_sdk_protobuf_request() -> None:
    payload = decode_forward_backward(_sdk_request())
    assert payload.model_id == "run:train:0"
    assert payload.seq_id == 4
    assert payload.loss_fn == "ppo"
    assert payload.loss_fn_config == {"clip_low_threshold": pytest.approx(0.7)}
    first, second = payload.data
    assert first.tokens.tolist() == [1, 2, 3]
    assert first.tokens.dtype == np.int64
    assert first.inputs["weights"].tolist() == [1.0, 0.5, 0.0]
    assert second.inputs["target_tokens"].tolist() == [[0, 0, 7], [9, 0, 0]]
    assert second.inputs["advantages"].dtype == np.float32


def test_rejects_inconsistent_tensors() -> None:
    raw = bytearray(_sdk_request())
    with pytest.raises(BadRequestError):
        decode_forward_backward(bytes(raw[: len(raw) // 2]))
    body = {
        "forward_backward_input": {
            "data": [
                {
                    "model_input": {"chunks": [{"tokens": [1, 2]}]},
                    "loss_fn_inputs": {
                        "target_tokens": {"data": [1, 2, 3], "dtype": "int64", "shape": [2]}
                    },
                }
            ],
            "loss_fn": "cross_entropy",
        },
        "model_id": "m",
    }
    with pytest.raises(BadRequestError, match="shape"):
        decode_forward_backward_json(body, forward_only=False)


def test_json_request_with_plain_lists_and_csr() -> None:
    body = {
        "forward_input": {
            "data": [
                {
                    "model_input": {"chunks": [{"type": "encoded_text", "tokens": [1, 2]}]},
                    "loss_fn_inputs": {
                        "target_tokens": [4, 5],
                        "weights": [1, 0],
                        "mask": {
                            "data": [3.5],
                            "dtype": "float32",
                            "shape": [2, 2],
                            "sparse_crow_indices": [0, 0, 1],
                            "sparse_col_indices": [1],
                        },
                    },
                }
            ],
            "loss_fn": "cross_entropy",
        },
        "model_id": "m",
        "seq_id": 3,
    }
    payload = decode_forward_backward_json(body, forward_only=True)
    assert payload.forward_only
    assert payload.seq_id == 3
    datum = payload.data[0]
    assert datum.inputs["target_tokens"].dtype == np.int64
    assert datum.inputs["weights"].dtype == np.float32
    assert datum.inputs["mask"].tolist() == [[0.0, 0.0], [0.0, 3.5]]


def test_forward_backward_output_round_trips_through_the_sdk() -> None:
    result = ForwardBackwardResult(
        outputs=[
            {"logprobs": np.array([-1.0, -2.0]), "ids": np.array([[1, 2], [3, 4]])},
            {"logprobs": np.array([-0.5], dtype=np.float32), "ids": np.array([[5, 6]])},
        ],
        metrics={"loss:sum": 3.5, "tokens:sum": 3.0},
    )
    decoded = deserialize_forward_backward_output(encode_forward_backward(result))
    assert decoded.metrics == {"loss:sum": 3.5, "tokens:sum": 3.0}
    assert decoded.loss_fn_output_type == "ArrayRecord"
    assert [o["logprobs"].tolist() for o in decoded.loss_fn_outputs] == [[-1.0, -2.0], [-0.5]]
    assert decoded.loss_fn_outputs[1]["ids"].shape == [1, 2]
    assert decoded.loss_fn_outputs[1]["ids"].dtype == "int64"
    legacy = encode_forward_backward_json(result)
    assert legacy["loss_fn_outputs"][0]["ids"] == {
        "data": [1, 2, 3, 4],
        "dtype": "int64",
        "shape": [2, 2],
    }


def test_sample_response_round_trips_through_the_sdk() -> None:
    result = SampleResult(
        sequences=[
            SampledSeq(tokens=[4, 5], logprobs=[-0.1, -0.2], stop_reason="stop"),
            SampledSeq(tokens=[6], logprobs=[-0.3], stop_reason="length"),
        ],
        prompt_logprobs=[None, -1.5, -2.5],
        topk_prompt_logprobs=[None, [(7, -0.5), (8, -1.0)], [(9, -0.25)]],
        prompt_cache_hit_tokens=2,
    )
    decoded = deserialize_sample_response(encode_sample(result))
    assert [s.tokens for s in decoded.sequences] == [[4, 5], [6]]
    assert [s.stop_reason for s in decoded.sequences] == ["stop", "length"]
    assert decoded.sequences[0].logprobs == pytest.approx([-0.1, -0.2])
    assert decoded.prompt_logprobs == [None, -1.5, -2.5]
    assert decoded.topk_prompt_logprobs == [None, [(7, -0.5), (8, -1.0)], [(9, -0.25)]]
    assert decoded.prompt_cache_hit_tokens == 2
    plain = deserialize_sample_response(encode_sample(SampleResult(sequences=result.sequences)))
    assert plain.prompt_logprobs is None
    assert plain.topk_prompt_logprobs is None
    legacy = encode_sample_json(result)
    assert legacy["topk_prompt_logprobs"][1] == [[7, -0.5], [8, -1.0]]
