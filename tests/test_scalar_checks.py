"""The shared value checks: what each accepts (normalized), what it rejects, and how it fails."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from tinkex_actors import _scalar_checks as sc
from tinkex_actors.errors import ConfigError, ValidationError


@pytest.mark.parametrize(
    ("check", "value", "expected"),
    [
        (sc.positive_int, 3, 3),
        (sc.positive_int, np.int64(2), 2),
        (sc.non_negative_int, 0, 0),
        (sc.non_negative_int, np.uint8(7), 7),
        (sc.check_int, -5, -5),
        (sc.check_number, 2, 2.0),
        (sc.check_number, np.float32(0.5), 0.5),
        (sc.check_seconds, 1, 1.0),
        (sc.check_seconds, 0.25, 0.25),
        (sc.check_bool, False, False),
        (sc.check_str, "", ""),
        (sc.check_str_map, {"a": "b"}, {"a": "b"}),
        (sc.check_header_name, "X-Trace-Id", "X-Trace-Id"),
        (sc.check_header_value, "a value\twith tab", "a value\twith tab"),
    ],
)
def test_accepted_values_come_back_normalized(
    check: Callable[..., Any], value: object, expected: object
) -> None:
    result = check(value, "f")
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("check", "value", "message"),
    [
        (sc.positive_int, 0, "must be >= 1, got 0"),
        (sc.positive_int, True, "expected an integer, got bool"),
        (sc.positive_int, 2.0, "expected an integer, got float"),
        (sc.non_negative_int, -1, "must be >= 0, got -1"),
        (sc.non_negative_int, "1", "expected an integer, got str"),
        (sc.check_number, math.nan, "must be finite"),
        (sc.check_number, False, "expected a number, got bool"),
        (sc.check_seconds, 0, "must be a finite number > 0, got 0"),
        (sc.check_seconds, math.inf, "must be a finite number > 0"),
        (sc.check_seconds, "5", "expected a number of seconds, got str"),
        (sc.check_bool, 1, "expected a bool, got int"),
        (sc.check_str, b"x", "expected a string, got bytes"),
        (sc.check_str_map, ["a"], "expected a mapping of str to str, got list"),
        (sc.check_str_map, {1: "a"}, "keys must be strings, got int"),
        (sc.check_header_name, "bad name", "'bad name' is not a valid header name"),
        (sc.check_header_name, "", "is not a valid header name"),
    ],
)
def test_rejected_values_name_the_field(
    check: Callable[..., Any], value: object, message: str
) -> None:
    with pytest.raises(ValidationError, match=r"^f: ") as info:
        check(value, "f")
    assert info.value.field == "f"
    assert message in str(info.value)


def test_bounds_of_numbers_and_seconds() -> None:
    assert sc.check_int(5, "f", minimum=5, maximum=5) == 5
    with pytest.raises(ValidationError, match="must be <= 4, got 5"):
        sc.check_int(5, "f", maximum=4)
    assert sc.check_number(1.0, "f", above=0, below=2, minimum=1, maximum=1) == 1.0
    for bounds in ({"above": 1.0}, {"below": 1.0}, {"minimum": 2.0}, {"maximum": 0.5}):
        with pytest.raises(ValidationError):
            sc.check_number(1.0, "f", **bounds)
    assert sc.check_seconds(1e9, "f", maximum=1e9) == 1e9
    with pytest.raises(ValidationError, match=r"> 0 and <= 1e\+09"):
        sc.check_seconds(2e9, "f", maximum=1e9)


def test_blank_and_empty_text() -> None:
    assert sc.check_str("  ", "f", nonempty=True) == "  "
    with pytest.raises(ValidationError, match="must not be empty"):
        sc.check_str("", "f", nonempty=True)
    with pytest.raises(ValidationError, match="must not be empty or blank"):
        sc.check_str(" \t", "f", nonblank=True)


def test_a_bad_map_value_is_named_by_its_key_and_the_map_is_copied() -> None:
    with pytest.raises(ValidationError) as info:
        sc.check_str_map({"ok": "x", "k": 1}, "meta")
    assert info.value.field == "meta.k"
    given = {"a": "b"}
    copied = sc.check_str_map(given, "meta")
    given["c"] = "d"
    assert copied == {"a": "b"}


@pytest.mark.parametrize("text", ["line\r\nbreak", "nul\x00", "caf\u00e9", "bell\x07"])
def test_header_values_refuse_what_could_split_or_corrupt_a_header(text: str) -> None:
    assert not sc.header_safe(text)
    with pytest.raises(ValidationError) as info:
        sc.check_header_value(text, "headers", what="the value of 'X-A'")
    # The value itself is never shown (header values are often secrets).
    assert text not in str(info.value)
    assert "the value of 'X-A'" in str(info.value)


def test_fail_chooses_the_exception() -> None:
    with pytest.raises(ConfigError) as info:
        sc.non_negative_int(-1, "max_retries", fail=ConfigError)
    assert info.value.field == "max_retries"
    assert str(info.value) == "Config.max_retries: must be >= 0, got -1"


def test_type_name_and_predicates() -> None:
    assert sc.type_name(b"") == "bytes"
    assert sc.is_int(np.int32(1))
    assert not sc.is_int(True)
    assert not sc.is_int(1.0)
    assert sc.is_number(np.float64(1))
    assert sc.is_number(1)
    assert not sc.is_number(False)
    assert not sc.is_number("1")
