"""The value checks every boundary shares: ints, numbers, seconds, bools, text, maps, headers.

One rule per kind of value, used by :class:`~tinkex_actors.config.Config`'s option
declarations, the wire types' attrs validators (``types/_validate.py``), the facades' argument
checks (``actors/_validate.py``) and the transport's per-call checks (``transport/_checks.py``).
Each check returns the value normalized (an ``int``, a ``float``, a ``dict``) or raises naming
``field``.

Which exception: ``fail(field, message)`` builds it. The default is
:class:`~tinkex_actors.errors.ValidationError` (bad input to a call or a wire type);
``Config`` passes a builder of :class:`~tinkex_actors.errors.ConfigError`. Messages never quote
a value that may be a secret (header values, credentials).

Booleans are never accepted where a number is expected (``True`` is an ``int`` in Python, but
never what a caller meant for a rank, a count or a timeout). Numpy scalars are accepted where
a number is, and come back as a plain ``int`` / ``float``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Final, SupportsFloat, SupportsIndex, cast

from tinkex_actors.errors import ValidationError

__all__ = [
    "Fail",
    "check_bool",
    "check_header_name",
    "check_header_value",
    "check_int",
    "check_number",
    "check_seconds",
    "check_str",
    "check_str_map",
    "header_safe",
    "invalid",
    "is_int",
    "is_number",
    "non_negative_int",
    "positive_int",
    "type_name",
]

#: Builds the exception a failed check raises, from ``(field, message)``.
Fail = Callable[[str, str], Exception]

# RFC 9110 token characters: what a header name may contain.
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Header values: visible ASCII, spaces and tabs; no CR, LF or NUL (header injection).
_HEADER_VALUE: Final = re.compile(r"[\t\x20-\x7e]*")


def invalid(field: str, message: str) -> ValidationError:
    """The default :data:`Fail`: a :class:`~tinkex_actors.errors.ValidationError`."""
    return ValidationError(message, field=field)


def type_name(value: object) -> str:
    """A short name of a value's type for messages (never the value itself)."""
    return type(value).__name__


# ------------------------------------------------------------------------------ numbers
def is_int(value: object) -> bool:
    """True for a real integer (``int`` or a numpy integer), never for ``bool``."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return type(value).__module__ == "numpy" and hasattr(value, "__index__")


def is_number(value: object) -> bool:
    """True for an int or a float (numpy scalars included), never for ``bool``."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    return type(value).__module__ == "numpy" and hasattr(value, "__float__")


def check_int(
    value: object,
    field: str,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    fail: Fail = invalid,
) -> int:
    """``value`` as an ``int`` within ``[minimum, maximum]``."""
    if not is_int(value):
        raise fail(field, f"expected an integer, got {type_name(value)}")
    result = int(cast("SupportsIndex", value))
    if minimum is not None and result < minimum:
        raise fail(field, f"must be >= {minimum}, got {result}")
    if maximum is not None and result > maximum:
        raise fail(field, f"must be <= {maximum}, got {result}")
    return result


def positive_int(value: object, field: str, *, fail: Fail = invalid) -> int:
    """An int >= 1 (counts, sizes, ranks)."""
    return check_int(value, field, minimum=1, fail=fail)


def non_negative_int(value: object, field: str, *, fail: Fail = invalid) -> int:
    """An int >= 0 (retries, offsets, sequence numbers)."""
    return check_int(value, field, minimum=0, fail=fail)


def check_number(
    value: object,
    field: str,
    *,
    minimum: float | None = None,
    above: float | None = None,
    below: float | None = None,
    maximum: float | None = None,
    fail: Fail = invalid,
) -> float:
    """``value`` as a finite ``float`` within the bounds (``above``/``below`` exclusive)."""
    if not is_number(value):
        raise fail(field, f"expected a number, got {type_name(value)}")
    result = float(cast("SupportsFloat", value))
    if not math.isfinite(result):
        raise fail(field, f"must be finite, got {result}")
    if minimum is not None and result < minimum:
        raise fail(field, f"must be >= {minimum}, got {result}")
    if above is not None and result <= above:
        raise fail(field, f"must be > {above}, got {result}")
    if below is not None and result >= below:
        raise fail(field, f"must be < {below}, got {result}")
    if maximum is not None and result > maximum:
        raise fail(field, f"must be <= {maximum}, got {result}")
    return result


def check_seconds(
    value: object, field: str, *, maximum: float | None = None, fail: Fail = invalid
) -> float:
    """A duration: a finite number of seconds > 0 (and <= ``maximum`` when given)."""
    if not is_number(value):
        raise fail(field, f"expected a number of seconds, got {type_name(value)}")
    result = float(cast("SupportsFloat", value))
    if not math.isfinite(result) or result <= 0 or (maximum is not None and result > maximum):
        bound = "> 0" if maximum is None else f"> 0 and <= {maximum:g}"
        raise fail(field, f"must be a finite number {bound}, got {value!r}")
    return result


# ------------------------------------------------------------------------------ other scalars
def check_bool(value: object, field: str, *, fail: Fail = invalid) -> bool:
    """Exactly ``True`` or ``False`` (``0``, ``1`` and ``"yes"`` are not bools)."""
    if not isinstance(value, bool):
        raise fail(field, f"expected a bool, got {type_name(value)}")
    return value


def check_str(
    value: object,
    field: str,
    *,
    nonempty: bool = False,
    nonblank: bool = False,
    fail: Fail = invalid,
) -> str:
    """A ``str``; not ``""`` when ``nonempty``; not only whitespace when ``nonblank``."""
    if not isinstance(value, str):
        raise fail(field, f"expected a string, got {type_name(value)}")
    if nonblank and not value.strip():
        raise fail(field, "must not be empty or blank")
    if nonempty and not value:
        raise fail(field, "must not be empty")
    return value


def check_str_map(value: object, field: str, *, fail: Fail = invalid) -> dict[str, str]:
    """A mapping of ``str`` to ``str``, copied into a ``dict``.

    A bad value is reported under ``<field>.<key>``.
    """
    if not isinstance(value, Mapping):
        raise fail(field, f"expected a mapping of str to str, got {type_name(value)}")
    for key, item in value.items():
        if not isinstance(key, str):
            raise fail(field, f"keys must be strings, got {type_name(key)}")
        if not isinstance(item, str):
            raise fail(f"{field}.{key}", f"expected a string, got {type_name(item)}")
    return dict(value)


# ------------------------------------------------------------------------------ HTTP headers
def header_safe(text: str) -> bool:
    """Whether ``text`` can travel as a header value: printable ASCII and tabs, no CR/LF/NUL."""
    return _HEADER_VALUE.fullmatch(text) is not None


def check_header_name(name: object, field: str, *, fail: Fail = invalid) -> str:
    """A header name: a non-empty RFC 9110 token."""
    if not isinstance(name, str) or _HEADER_NAME.fullmatch(name) is None:
        raise fail(field, f"{name!r} is not a valid header name")
    return name


def check_header_value(
    value: object, field: str, *, what: str = "value", fail: Fail = invalid
) -> str:
    """A header value (a ``str`` for which :func:`header_safe` holds). The message calls it
    ``what`` and never shows it: header values are often secrets."""
    if not isinstance(value, str) or not header_safe(value):
        raise fail(field, f"{what} must be a str of printable ASCII (no CR, LF or NUL)")
    return value
