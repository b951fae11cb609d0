"""Datum: per-key dtypes, numpy and torch inputs, shape checks, provenance spans."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tinkex_actors._constants import LOSS_INPUT_DTYPES
from tinkex_actors.errors import ValidationError
from tinkex_actors.types import (
    Datum,
    ModelInput,
    PromptProvenanceSpan,
    SampledProvenanceSpan,
    TensorData,
)

MI = ModelInput.from_ints([1, 2, 3])


@pytest.mark.parametrize(("key", "dtype"), sorted(LOSS_INPUT_DTYPES.items()))
def test_plain_lists_take_the_dtype_of_their_key(key: str, dtype: str) -> None:
    datum = Datum(MI, {key: [1, 2, 3]})
    td = datum.loss_fn_inputs[key]
    assert td.dtype == dtype
    assert td.shape == (3,)
    assert td.data == ([1, 2, 3] if dtype == "int64" else [1.0, 2.0, 3.0])


def test_unknown_key_with_a_plain_list_is_rejected_naming_the_key() -> None:
    with pytest.raises(ValidationError) as info:
        Datum(MI, {"mask": [1, 0, 1]})
    assert info.value.field == "Datum.loss_fn_inputs.mask"
    assert "mask" in str(info.value)


def test_unknown_key_with_tensor_data_or_numpy_is_accepted() -> None:
    datum = Datum(MI, {"mask": TensorData([1, 0, 1], "int64"), "scores": np.array([0.5, 1.5, 2.5])})
    assert datum.loss_fn_inputs["mask"].dtype == "int64"
    assert datum.loss_fn_inputs["scores"].dtype == "float32"


def test_numpy_dtype_decides_like_the_official_sdk() -> None:
    datum = Datum(
        MI,
        {
            "target_tokens": np.array([2, 3, 4], dtype=np.int32),
            "weights": np.array([1, 1, 0], dtype=np.float64),
        },
    )
    assert datum.loss_fn_inputs["target_tokens"].dtype == "int64"
    assert datum.loss_fn_inputs["weights"].dtype == "float32"
    assert datum.loss_fn_inputs["weights"].data == [1.0, 1.0, 0.0]


def test_two_dimensional_inputs_keep_their_shape() -> None:
    datum = Datum(MI, {"target_tokens": [[1, 2], [3, 4], [5, 6]], "weights": np.ones((3, 2))})
    assert datum.loss_fn_inputs["target_tokens"].shape == (3, 2)
    assert datum.loss_fn_inputs["weights"].shape == (3, 2)


def test_torch_tensors_are_accepted() -> None:
    torch = pytest.importorskip("torch")
    datum = Datum(
        MI,
        {
            "target_tokens": torch.tensor([2, 3, 4]),
            "weights": torch.tensor([1.0, 0.5, 0.0], dtype=torch.bfloat16),
        },
    )
    assert datum.loss_fn_inputs["target_tokens"].data == [2, 3, 4]
    assert datum.loss_fn_inputs["weights"].data == [1.0, 0.5, 0.0]


def test_equality() -> None:
    a = Datum(MI, {"target_tokens": [2, 3, 4], "weights": [1, 1, 1]})
    b = Datum(MI, {"target_tokens": np.array([2, 3, 4]), "weights": np.ones(3, dtype=np.float32)})
    assert a == b
    assert a != Datum(MI, {"target_tokens": [2, 3, 5], "weights": [1, 1, 1]})


def test_provenance_spans_come_in_pairs() -> None:
    spans = [
        PromptProvenanceSpan(sequence_id="s1", length=2),
        SampledProvenanceSpan(sequence_id="s2", offset=1, length=1),
    ]
    datum = Datum(MI, {}, model_input_spans=spans, loss_fn_input_spans=spans[:1])
    assert datum.model_input_spans == tuple(spans)
    with pytest.raises(ValidationError) as info:
        Datum(MI, {}, model_input_spans=spans)
    assert info.value.field == "Datum.loss_fn_input_spans"


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: Datum([1, 2, 3], {}), "Datum.model_input"),  # type: ignore[arg-type]
        (
            lambda: Datum(MI, {"target_tokens": [1, 2, 3], "weights": [1.0, 1.0]}),
            "Datum.loss_fn_inputs.weights",
        ),
        (lambda: Datum(MI, {"target_tokens": [1, 2.5, 3]}), "Datum.loss_fn_inputs.target_tokens"),
        (lambda: Datum(MI, {"target_tokens": [1, True, 3]}), "Datum.loss_fn_inputs.target_tokens"),
        (lambda: Datum(MI, {"weights": ["a"]}), "Datum.loss_fn_inputs.weights"),
        (lambda: Datum(MI, {"weights": 1.0}), "Datum.loss_fn_inputs.weights"),
        (lambda: Datum(MI, {"weights": np.array([True])}), "Datum.loss_fn_inputs.weights"),
        (lambda: Datum(MI, {1: [1]}), "Datum.loss_fn_inputs"),  # type: ignore[dict-item]
        (lambda: Datum(MI, [1, 2]), "Datum.loss_fn_inputs"),  # type: ignore[arg-type]
        (
            lambda: Datum(MI, {}, model_input_spans=[1], loss_fn_input_spans=[]),
            "Datum.model_input_spans[0]",
        ),  # type: ignore[list-item]
        (
            lambda: PromptProvenanceSpan(sequence_id="", length=1),
            "PromptProvenanceSpan.sequence_id",
        ),
        (lambda: SampledProvenanceSpan(sequence_id="s", length=-1), "SampledProvenanceSpan.length"),
    ],
)
def test_rejections_name_the_field(build: Any, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        build()
    assert info.value.field == field


def test_two_dimensional_target_and_weight_lengths_are_not_compared() -> None:
    # Only 1-D target_tokens/weights must agree; 2-D shapes are the loss function's business.
    datum = Datum(MI, {"target_tokens": [[1, 2]], "weights": [1.0, 2.0, 3.0]})
    assert datum.loss_fn_inputs["target_tokens"].shape == (1, 2)


def test_pickle_and_deepcopy_round_trip() -> None:
    import copy
    import pickle

    datum = Datum(
        MI,
        {"target_tokens": [2, 3, 4], "mask": TensorData([1], "int64", [1, 3], [0, 1], [2])},
        model_input_spans=[PromptProvenanceSpan(sequence_id="s", length=3)],
        loss_fn_input_spans=[SampledProvenanceSpan(sequence_id="s", length=3)],
    )
    assert pickle.loads(pickle.dumps(datum)) == datum
    assert copy.deepcopy(datum) == datum
