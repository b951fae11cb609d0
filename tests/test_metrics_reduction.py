"""Combining chunk results: each reduction, the key rules, and the official SDK as oracle."""

from __future__ import annotations

import math
from typing import Any

import pytest
import tinker.types as T  # noqa: N812 - short oracle prefix
from hypothesis import given, settings
from hypothesis import strategies as st
from tinker.lib.chunked_fwdbwd_helpers import combine_fwd_bwd_output_results

from tinkex_actors._metrics_reduction import combine_forward_backward_outputs, reduce_metrics
from tinkex_actors.errors import ResponseDecodeError
from tinkex_actors.types import ForwardBackwardOutput, TensorData


def output(metrics: dict[str, float], n: int, tag: str = "ArrayRecord") -> ForwardBackwardOutput:
    return ForwardBackwardOutput(
        loss_fn_output_type=tag,
        loss_fn_outputs=[{"logprobs": TensorData([float(i)], "float32")} for i in range(n)],
        metrics=metrics,
    )


def test_each_reduction() -> None:
    chunks = [
        {
            "l:sum": 9.0,
            "a:mean": 1.0,
            "lo:min": 3.0,
            "hi:max": 3.0,
            "s:slack": 1.0,
            "u:unique": 7.0,
            "h:hash2": 5.0,
        },
        {
            "l:sum": 4.5,
            "a:mean": 4.0,
            "lo:min": -1.0,
            "hi:max": 8.0,
            "s:slack": 4.0,
            "u:unique": 8.0,
            "h:hash2": 6.0,
        },
    ]
    result = reduce_metrics(chunks, [1.0, 2.0])
    assert result == {
        "l:sum": 13.5,
        "a:mean": 3.0,  # (1*1 + 4*2) / 3
        "lo:min": -1.0,
        "hi:max": 8.0,
        "s:slack": 1.0,  # 4 - 3
        "u:unique": 7.0,
        "u:unique_1": 8.0,
        "h:hash2": 11,
    }


def test_key_rules() -> None:
    chunks = [{"a:sum": 1.0, "b:sum": 2.0, "c:median": 3.0}, {"a:sum": 1.0, "d:sum": 9.0}]
    # keys come from the first chunk; missing in a later chunk -> dropped;
    # unknown reduction -> dropped
    assert reduce_metrics(chunks) == {"a:sum": 2.0}
    assert reduce_metrics([]) == {}


@pytest.mark.parametrize("key", ["loss", "loss:sum:extra", ""])
def test_keys_without_exactly_one_colon_are_a_decode_error(key: str) -> None:
    with pytest.raises(ResponseDecodeError) as info:
        reduce_metrics([{key: 1.0}])
    assert key in str(info.value)
    assert info.value.expected == "metric keys of the form 'name:reduction'"


def test_hash_of_non_finite_is_a_decode_error() -> None:
    with pytest.raises(ResponseDecodeError):
        reduce_metrics([{"h:hash2": math.nan}])


def test_mean_with_no_datums_falls_back_to_equal_weights() -> None:
    assert reduce_metrics([{"a:mean": 1.0}, {"a:mean": 3.0}], [0.0, 0.0]) == {"a:mean": 2.0}


def test_combine_outputs() -> None:
    combined = combine_forward_backward_outputs(
        [
            output({"loss:sum": 1.0, "x:mean": 1.0}, 1),
            output({"loss:sum": 2.0, "x:mean": 4.0}, 2, "Other"),
        ]
    )
    assert combined.loss_fn_output_type == "ArrayRecord"
    assert [o["logprobs"].data for o in combined.loss_fn_outputs] == [[0.0], [0.0], [1.0]]
    assert combined.metrics == {"loss:sum": 3.0, "x:mean": 3.0}
    assert combine_forward_backward_outputs([]) == ForwardBackwardOutput(
        loss_fn_output_type="", loss_fn_outputs=[], metrics={}
    )


REDUCTIONS = ["sum", "mean", "min", "max", "slack", "unique", "hash2", "median"]
VALUES = st.floats(-1e6, 1e6, allow_nan=False).map(lambda x: round(x, 3))


@st.composite
def chunk_outputs(draw: Any) -> list[tuple[dict[str, float], int]]:
    keys = draw(
        st.lists(
            st.sampled_from([f"m{i}:{r}" for i in range(3) for r in REDUCTIONS]),
            unique=True,
            max_size=6,
        )
    )
    chunks = []
    for _ in range(draw(st.integers(1, 4))):
        present = [k for k in keys if draw(st.integers(0, 9)) > 0]  # keys sometimes missing
        metrics = {
            k: (float(draw(st.integers(0, 2**40))) if k.endswith("hash2") else draw(VALUES))
            for k in present
        }
        chunks.append((metrics, draw(st.integers(1, 5))))
    return chunks


@settings(max_examples=80, deadline=None)
@given(chunk_outputs())
def test_matches_the_official_reduction(chunks: list[tuple[dict[str, float], int]]) -> None:
    ours = combine_forward_backward_outputs([output(m, n) for m, n in chunks])
    theirs = combine_fwd_bwd_output_results(
        [
            T.ForwardBackwardOutput(
                loss_fn_output_type="ArrayRecord",
                loss_fn_outputs=[
                    {"logprobs": T.TensorData(data=[float(i)], dtype="float32")} for i in range(n)
                ],
                metrics=m,
            )
            for m, n in chunks
        ]
    )
    assert ours.metrics.keys() == theirs.metrics.keys()
    for key, value in ours.metrics.items():
        assert value == pytest.approx(theirs.metrics[key], rel=1e-9, abs=1e-6), key
    assert len(ours.loss_fn_outputs) == len(theirs.loss_fn_outputs)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 2**62).map(float), min_size=1, max_size=6), st.randoms())
def test_hash_is_order_insensitive(values: list[float], rnd: Any) -> None:
    shuffled = values[:]
    rnd.shuffle(shuffled)
    for name in ("h:hash2", "h:hash_unordered"):
        a = reduce_metrics([{name: v} for v in values])
        b = reduce_metrics([{name: v} for v in shuffled])
        assert a == b


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(VALUES, st.integers(1, 10)), min_size=1, max_size=6))
def test_reduction_invariants(pairs: list[tuple[float, int]]) -> None:
    values = [v for v, _ in pairs]
    weights = [float(w) for _, w in pairs]
    metrics = [{"a:min": v, "a:max": v, "a:mean": v, "a:slack": v, "a:sum": v} for v in values]
    result = reduce_metrics(metrics, weights)
    assert result["a:min"] <= result["a:mean"] + 1e-6
    assert result["a:mean"] <= result["a:max"] + 1e-6
    assert result["a:slack"] == pytest.approx(result["a:max"] - result["a:mean"], abs=1e-6)
    assert result["a:sum"] == pytest.approx(sum(values), abs=1e-6)
    single = reduce_metrics(metrics[:1], weights[:1])
    assert single["a:mean"] == pytest.approx(values[0])
    assert single["a:slack"] == pytest.approx(0.0, abs=1e-6)
