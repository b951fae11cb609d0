"""attrs validators that raise :class:`~tinkex_actors.errors.ValidationError` naming the field.

Each factory returns a validator ``(instance, attribute, value)``; the error's ``field`` is
``"<ClassName>.<attribute>"``. The rules themselves (what an int, a number, a bool, a
non-empty string is) are :mod:`tinkex_actors._scalar_checks`'s, shared with Config, the
facades and the transport; this module adapts them to attrs and re-exports the few the wire
types call directly (``check_int``, ``check_number``, ``is_int``, ``type_name``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from tinkex_actors._scalar_checks import (
    check_bool,
    check_int,
    check_number,
    check_str,
    check_str_map,
    is_int,
    type_name,
)
from tinkex_actors.errors import ValidationError

__all__ = [
    "SEND_NULL",
    "bool_field",
    "check_int",
    "check_number",
    "float_field",
    "instance_of",
    "int_field",
    "is_int",
    "list_of",
    "one_of",
    "path",
    "set_floats",
    "str_field",
    "str_list",
    "str_mapping",
    "type_name",
]

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def path(instance: object, attribute: attrs.Attribute[Any]) -> str:
    """The dotted field name used in errors: ``ClassName.attribute`` (alias, not ``_name``)."""
    return f"{type(instance).__name__}.{attribute.alias or attribute.name}"


# ------------------------------------------------------------------------------ validators


def int_field(
    *, minimum: int | None = None, maximum: int | None = None, optional: bool = False
) -> Validator:
    """Validator: an int (not bool) within bounds; ``None`` allowed when ``optional``.

    A numpy integer is stored as the plain ``int`` it stands for: request bodies are encoded
    by JSON encoders that know only Python numbers.
    """

    def validate(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is None and optional:
            return
        result = check_int(value, path(instance, attribute), minimum=minimum, maximum=maximum)
        if type(value) is not int:
            object.__setattr__(instance, attribute.name, result)

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
        check_number(
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
        check_str(value, path(instance, attribute), nonempty=nonempty)

    return validate


def bool_field(*, optional: bool = False) -> Validator:
    """Validator: exactly ``True`` or ``False``; ``None`` allowed when ``optional``."""

    def validate(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is None and optional:
            return
        check_bool(value, path(instance, attribute))

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


def str_mapping(*, values: type[str] | None = None, optional: bool = False) -> Validator:
    """Validator: a mapping with string keys; with ``values=str``, of ``str`` to ``str``."""

    def validate(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is None and optional:
            return
        field = path(instance, attribute)
        if values is str:
            check_str_map(value, field)
            return
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
