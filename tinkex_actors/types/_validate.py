"""attrs validators that raise :class:`~tinkex_actors.errors.ValidationError` naming the field.

Each factory returns a validator ``(instance, attribute, value)``; the error's ``field`` is
``"<ClassName>.<attribute>"``. Booleans are never accepted where a number is expected (``True``
is an ``int`` in Python, but never what a caller meant for a rank or a token count).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, SupportsIndex, cast

import attrs

from tinkex_actors.errors import ValidationError

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def path(instance: object, attribute: attrs.Attribute[Any]) -> str:
    """The dotted field name used in errors: ``ClassName.attribute`` (alias, not ``_name``)."""
    return f"{type(instance).__name__}.{attribute.alias or attribute.name}"


def type_name(value: object) -> str:
    """A short name of a value's type for messages (never the value itself)."""
    return type(value).__name__


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
    value: object, field: str, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """Return ``value`` as an int, or raise naming ``field``."""
    if not is_int(value):
        raise ValidationError(f"expected an integer, got {type_name(value)}", field=field)
    result = int(cast("SupportsIndex", value))
    if minimum is not None and result < minimum:
        raise ValidationError(f"must be >= {minimum}, got {result}", field=field)
    if maximum is not None and result > maximum:
        raise ValidationError(f"must be <= {maximum}, got {result}", field=field)
    return result


def check_float(
    value: object,
    field: str,
    *,
    minimum: float | None = None,
    below: float | None = None,
    above: float | None = None,
    maximum: float | None = None,
) -> float:
    """Return ``value`` as a finite float within the bounds, or raise naming ``field``."""
    if not is_number(value):
        raise ValidationError(f"expected a number, got {type_name(value)}", field=field)
    result = float(cast("float", value))
    if not math.isfinite(result):
        raise ValidationError(f"must be finite, got {result}", field=field)
    if minimum is not None and result < minimum:
        raise ValidationError(f"must be >= {minimum}, got {result}", field=field)
    if above is not None and result <= above:
        raise ValidationError(f"must be > {above}, got {result}", field=field)
    if below is not None and result >= below:
        raise ValidationError(f"must be < {below}, got {result}", field=field)
    if maximum is not None and result > maximum:
        raise ValidationError(f"must be <= {maximum}, got {result}", field=field)
    return result


# ------------------------------------------------------------------------------ validators


def int_field(
    *, minimum: int | None = None, maximum: int | None = None, optional: bool = False
) -> Validator:
    """Validator: an int (not bool) within bounds; ``None`` allowed when ``optional``."""

    def validate(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is None and optional:
            return
        check_int(value, path(instance, attribute), minimum=minimum, maximum=maximum)

    return validate


def float_field(
    *,
    minimum: float | None = None,
    below: float | None = None,
    above: float | None = None,
    maximum: float | None = None,
    optional: bool = False,
) -> Validator:
    """Validator: a finite number (not bool) within bounds; ``None`` allowed when ``optional``."""

    def validate(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is None and optional:
            return
        check_float(
            value,
            path(instance, attribute),
            minimum=minimum,
            below=below,
            above=above,
            maximum=maximum,
        )

    return validate


def str_field(*, nonempty: bool = False, optional: bool = False) -> Validator:
    """Validator: a ``str`` (non-empty when asked); ``None`` allowed when ``optional``."""

    def validate(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is None and optional:
            return
        if not isinstance(value, str):
            raise ValidationError(
                f"expected a string, got {type_name(value)}", field=path(instance, attribute)
            )
        if nonempty and not value:
            raise ValidationError("must not be empty", field=path(instance, attribute))

    return validate


def bool_field(*, optional: bool = False) -> Validator:
    """Validator: exactly ``True`` or ``False``; ``None`` allowed when ``optional``."""

    def validate(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is None and optional:
            return
        if not isinstance(value, bool):
            raise ValidationError(
                f"expected a bool, got {type_name(value)}", field=path(instance, attribute)
            )

    return validate


def one_of(choices: Sequence[object], *, optional: bool = False) -> Validator:
    """Validator: one of ``choices`` (a literal's values)."""

    def validate(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is None and optional:
            return
        if isinstance(value, bool) or value not in choices:
            shown = ", ".join(repr(c) for c in choices)
            raise ValidationError(
                f"must be one of {shown}, got {value!r}"
                if isinstance(value, str | int)
                else f"must be one of {shown}, got a {type_name(value)}",
                field=path(instance, attribute),
            )

    return validate


def instance_of(cls: type | tuple[type, ...], *, optional: bool = False) -> Validator:
    """Validator: an instance of ``cls``; ``None`` allowed when ``optional``."""
    names = " or ".join(c.__name__ for c in (cls if isinstance(cls, tuple) else (cls,)))

    def validate(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is None and optional:
            return
        if not isinstance(value, cls):
            raise ValidationError(
                f"expected {names}, got {type_name(value)}", field=path(instance, attribute)
            )

    return validate


def str_list(*, optional: bool = False) -> Validator:
    """Validator: a sequence of strings (not a bare string)."""

    def validate(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is None and optional:
            return
        field = path(instance, attribute)
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise ValidationError(
                f"expected a list of strings, got {type_name(value)}", field=field
            )
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise ValidationError(
                    f"expected a string, got {type_name(item)}", field=f"{field}[{i}]"
                )

    return validate


def list_of(cls: type | tuple[type, ...], *, optional: bool = False) -> Validator:
    """Validator: a sequence whose items are instances of ``cls``."""
    name = " or ".join(c.__name__ for c in (cls if isinstance(cls, tuple) else (cls,)))

    def validate(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is None and optional:
            return
        field = path(instance, attribute)
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise ValidationError(f"expected a list of {name}, got {type_name(value)}", field=field)
        for i, item in enumerate(value):
            if not isinstance(item, cls):
                raise ValidationError(
                    f"expected {name}, got {type_name(item)}", field=f"{field}[{i}]"
                )

    return validate


def str_mapping(
    *, values: type | tuple[type, ...] | None = None, optional: bool = False
) -> Validator:
    """Validator: a mapping with string keys (and values of ``values`` when given)."""

    def validate(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is None and optional:
            return
        field = path(instance, attribute)
        if not isinstance(value, Mapping):
            raise ValidationError(f"expected a mapping, got {type_name(value)}", field=field)
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError(f"keys must be strings, got {type_name(key)}", field=field)
            if values is not None and not isinstance(item, values):
                raise ValidationError(
                    f"expected a {getattr(values, '__name__', 'value')}, got {type_name(item)}",
                    field=f"{field}.{key}",
                )

    return validate


def set_floats(instance: object, *names: str) -> None:
    """Store the named number fields as ``float`` (so ``1`` and ``1.0`` encode alike)."""
    for name in names:
        value = getattr(instance, name)
        if value is not None and type(value) is not float:
            object.__setattr__(instance, name, float(value))


#: attrs field metadata: send ``null`` on the wire when the value is None (the default is to
#: leave None-defaulted fields out, as the official SDK's ``exclude_none`` does).
SEND_NULL: Mapping[str, bool] = {"send_null": True}
