"""Fuzzing every public constructor: bad input only ever raises the library's typed errors.

Each wire type of :mod:`tinkex_actors.types`, the helper constructors (``TensorData.from_*``,
``ModelInput.from_ints``, ``ParsedCheckpointTinkerPath.from_tinker_path``, ...) and
:class:`~tinkex_actors.Config` get arbitrary arguments. They either build an object or raise
:class:`ValidationError` (``ConfigError`` for Config), never ``TypeError``, ``KeyError``,
``AttributeError``, ``OverflowError``, ``struct.error`` or any other stray exception.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from typing import Any

import attrs
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinkex_actors import Config, types
from tinkex_actors.errors import ConfigError, ResponseDecodeError, ValidationError

from ._strategies import arguments, junk

#: ``TINKEX_FUZZ_SCALE=50`` runs fifty times the examples (a deep run, minutes).
SCALE = int(os.environ.get("TINKEX_FUZZ_SCALE", "1"))
FUZZ = settings(
    max_examples=20 * SCALE,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

TYPE_CLASSES = sorted(
    (
        obj
        for name in types.__all__
        if inspect.isclass(obj := getattr(types, name)) and attrs.has(obj)
    ),
    key=lambda cls: cls.__name__,
)


def test_every_wire_type_is_fuzzed() -> None:
    assert len(TYPE_CLASSES) > 60


@pytest.mark.parametrize(
    "build",
    [
        lambda: types.EncodedTextChunk(tokens=0),  # type: ignore[arg-type]
        lambda: types.TensorData(None, "int64"),
        lambda: types.TensorData.from_list({"": None}, "int64"),  # type: ignore[arg-type]
        lambda: types.ModelInput.from_ints(None),
        lambda: types.SampleResponse(sequences=[]).with_sequence_ids(None),  # type: ignore[arg-type]
        lambda: types.SampleResponse(sequences=[]).with_sequence_ids("ab"),
    ],
    ids=["chunk-int", "tensor-none", "tensor-dict", "tokens-none", "ids-none", "ids-str"],
)
def test_found_by_fuzzing(build: Any) -> None:
    """Inputs that once raised TypeError / KeyError instead of a ValidationError."""
    with pytest.raises(ValidationError):
        build()


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("cls", TYPE_CLASSES, ids=lambda cls: cls.__name__)
@FUZZ
@given(data=st.data())
def test_wire_type_constructors(cls: type[Any], data: st.DataObject) -> None:
    kwargs = data.draw(arguments(cls))
    try:
        built = cls(**kwargs)
    except ValidationError:
        return
    repr(built)  # a built object can always be shown


@FUZZ
@given(data=st.data())
def test_config(data: st.DataObject) -> None:
    kwargs = data.draw(arguments(Config))
    try:
        config = Config(**kwargs)
    except ConfigError:
        return
    repr(config)
    hash(config)


CONFIG_OPTIONS = sorted(p for p in inspect.signature(Config.new).parameters if p != "env")


@FUZZ
@given(options=st.dictionaries(st.sampled_from(CONFIG_OPTIONS), junk(), max_size=4),
       env=st.dictionaries(st.sampled_from(["TINKER_API_KEY", "TINKER_BASE_URL", "TINKER_TAGS",
                                            "TINKER_PROJECT_ID", "TINKER_TELEMETRY"]),
                           st.text(max_size=30), max_size=5))  # fmt: skip
def test_config_new_and_with(options: dict[str, Any], env: dict[str, str]) -> None:
    try:
        config = Config.new(env=env, **options)
    except ConfigError:
        return
    with contextlib.suppress(ConfigError):
        config.with_(**options)


@FUZZ
@given(data=junk(), dtype=junk() | st.sampled_from(["int64", "float32", "int32", "bf16"]),
       shape=junk() | st.lists(st.integers(-2, 6), max_size=3))  # fmt: skip
def test_tensor_helpers(data: Any, dtype: Any, shape: Any) -> None:
    for build in (
        lambda: types.TensorData.from_list(data, dtype),
        lambda: types.TensorData.from_bytes(data, dtype, shape),
        lambda: types.TensorData(data, dtype, shape),
    ):
        try:
            tensor = build()
        except ValidationError:
            continue
        tensor.to_list()
        tensor.nbytes  # noqa: B018  (a property that must not fail)


# numpy warns when a float64 beyond float32's range is cast (it becomes inf, where a list
# element out of range is a ValidationError); the warning is not an error of ours.
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@FUZZ
@given(values=st.lists(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**70),
                                                                                2**70), max_size=6),
       dtype=st.sampled_from(["float64", "float32", "int64", "int32", "uint8", "object", "bool"]),
       wanted=st.none() | st.sampled_from(["int64", "float32", "nope"]))  # fmt: skip
def test_tensor_from_numpy(values: list[Any], dtype: str, wanted: str | None) -> None:
    try:
        array = np.asarray(values, dtype=dtype)
    except (OverflowError, ValueError, TypeError):
        return  # numpy itself refuses: nothing of ours runs
    with contextlib.suppress(ValidationError):
        types.TensorData.from_numpy(array, wanted)


@FUZZ
@given(tokens=junk() | st.lists(st.integers(-(2**40), 2**40), max_size=8), extra=junk())
def test_model_input_helpers(tokens: Any, extra: Any) -> None:
    try:
        model_input = types.ModelInput.from_ints(tokens)
    except ValidationError:
        return
    model_input.to_ints()
    for grow in (lambda: model_input.append_int(extra), lambda: model_input.append(extra)):
        with contextlib.suppress(ValidationError):
            grow()


@FUZZ
@given(path=st.text(max_size=60) | junk()
       | st.from_regex(r"tinker://[a-z0-9:._-]{0,12}/(weights|sampler_weights|x)?/?.{0,12}",
                       fullmatch=True))  # fmt: skip
def test_tinker_paths(path: Any) -> None:
    try:
        parsed = types.ParsedCheckpointTinkerPath.from_tinker_path(path)
    except ValidationError:
        return
    assert parsed.tinker_path == path


@FUZZ
@given(ids=junk() | st.lists(st.text(max_size=5), max_size=4))
def test_sample_response_sequence_ids(ids: Any) -> None:
    response = types.SampleResponse(
        sequences=[types.SampledSequence(stop_reason="length", tokens=[1, 2])]
    )
    with contextlib.suppress(ValidationError, ResponseDecodeError):
        response.with_sequence_ids(ids)
