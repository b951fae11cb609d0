"""Hypothesis strategies for fuzzing the public API: junk, near-misses and valid values.

``arguments(callable)`` builds keyword arguments for any constructor from its signature: each
parameter gets arbitrary junk (nested lists/dicts of anything, NaN, huge integers, bytes,
surrogate-free unicode), a value of roughly the right kind (guessed from the annotation), or,
when it has a default, nothing at all. Mixing all three gets past the first checks often
enough to reach the deep ones.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from tinkex_actors import types

__all__ = ["arguments", "junk", "model_inputs", "tensors", "valid_datums"]

_TEXT = st.text(max_size=24)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.integers(-3, 300)
    | st.floats(allow_nan=True, allow_infinity=True)
    | _TEXT
    | st.binary(max_size=24)
)


@functools.cache
def junk() -> st.SearchStrategy[Any]:
    """Any JSON-ish or Python value, nested a little."""
    return st.recursive(
        _SCALARS,
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.tuples(inner, inner)
            | st.dictionaries(_TEXT, inner, max_size=4)
        ),
        max_leaves=8,
    )


def tensors() -> st.SearchStrategy[types.TensorData]:
    """Valid dense tensors."""
    return st.one_of(
        st.lists(st.integers(0, 2047), min_size=1, max_size=8).map(
            lambda v: types.TensorData(v, "int64")
        ),
        st.lists(st.floats(-1e3, 1e3, width=32), min_size=1, max_size=8).map(
            lambda v: types.TensorData(v, "float32")
        ),
    )


def model_inputs() -> st.SearchStrategy[types.ModelInput]:
    """Valid token prompts."""
    return st.lists(st.integers(0, 2047), min_size=1, max_size=12).map(types.ModelInput.from_ints)


def valid_datums() -> st.SearchStrategy[types.Datum]:
    """Valid cross-entropy datums."""

    def build(tokens: list[int]) -> types.Datum:
        return types.Datum(
            types.ModelInput.from_ints(tokens[:-1]),
            {"target_tokens": tokens[1:], "weights": [1.0] * (len(tokens) - 1)},
        )

    return st.lists(st.integers(0, 2047), min_size=2, max_size=10).map(build)


_ENUM_WORDS = (
    "cross_entropy",
    "importance_sampling",
    "ppo",
    "int64",
    "float32",
    "training",
    "sampler",
    "weights",
    "sampler_weights",
    "active",
    "length",
    "stop",
    "png",
    "jpeg",
    "INFO",
    "ERROR",
    "snapshot",
)


@functools.cache
def _plausible(annotation: str) -> st.SearchStrategy[Any]:
    """A value of about the kind ``annotation`` names (a string: annotations are lazy)."""
    text = annotation
    options: list[st.SearchStrategy[Any]] = []
    if "ModelInput" in text and "Chunk" not in text:
        options.append(model_inputs())
    if "TensorData" in text:
        options.append(tensors())
        options.append(st.dictionaries(st.sampled_from(["target_tokens", "weights"]), tensors()))
    if "Datum" in text:
        options.append(st.lists(valid_datums(), max_size=3))
    if "Chunk" in text:
        options.append(model_inputs().map(lambda m: list(m.chunks)))
    if "datetime" in text:
        options.append(st.datetimes(timezones=st.just(dt.UTC)))
    if "bytes" in text:
        options.append(st.binary(max_size=32))
    if "bool" in text:
        options.append(st.booleans())
    if "int" in text:
        options.append(st.integers(-2, 5000))
        options.append(st.lists(st.integers(-2, 5000), max_size=6))
    if "float" in text:
        options.append(st.floats(-10, 10))
        options.append(st.lists(st.floats(-10, 10), max_size=6))
    if "str" in text or "Literal" in text or text[:1].isupper():
        options.append(_TEXT)
        options.append(st.sampled_from(_ENUM_WORDS))
        options.append(st.just("tinker://run-1/weights/name"))
    if "dict" in text or "Mapping" in text:
        options.append(st.dictionaries(_TEXT, _TEXT | st.floats(-1, 1), max_size=3))
    if "AdamParams" in text:
        options.append(st.just(types.AdamParams()))
    if "LoraConfig" in text:
        options.append(st.just(types.LoraConfig(rank=2)))
    if "SamplingParams" in text:
        options.append(st.just(types.SamplingParams(max_tokens=4)))
    return st.one_of(options) if options else junk()


@functools.cache
def arguments(target: Callable[..., Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Keyword arguments for ``target``: junk, plausible values, or left out when optional."""
    parameters = [
        p
        for p in inspect.signature(target).parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for parameter in parameters:
        annotation = parameter.annotation
        hint = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
        value = st.one_of(junk(), _plausible(hint), _plausible(hint))
        if parameter.default is not parameter.empty:
            value = st.one_of(st.just(_OMIT), value)
        fields[parameter.name] = value
    return st.fixed_dictionaries(fields).map(
        lambda chosen: {k: v for k, v in chosen.items() if v is not _OMIT}
    )


_OMIT = object()
