"""Constructor type checks derived from annotations, for types without hand-written validators.

``@attrs.frozen(field_transformer=typed)`` gives every field that has no validator one that
checks the value against the field's annotation (resolved on first use, then cached):
``str``, ``int`` (not bool), ``float`` (int accepted), ``bool``, ``datetime``, enums,
``Literal``, ``X | None``, ``list``/``tuple``/``dict`` of those, attrs classes and ``Any``.
Lists of numbers are checked with one C-level pass over the element types.

These are checks of structure (a value's type against its annotation, exact types, no numpy
scalars: decoded JSON never holds them). Rules about values (ranges, non-empty, finite) are
written as explicit validators with :mod:`tinkex_actors.types._validate`, which takes them from
the shared :mod:`tinkex_actors._scalar_checks`.
"""

from __future__ import annotations

import datetime as dt
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, Union, get_args, get_origin

import attrs

from tinkex_actors._scalar_checks import type_name
from tinkex_actors.errors import ValidationError

__all__ = ["typed"]

Check = Callable[[Any, str], None]
_CHECKS: dict[tuple[type, str], Check] = {}


def typed(cls: type, fields: list[attrs.Attribute[Any]]) -> list[attrs.Attribute[Any]]:
    """attrs field transformer: add an annotation-derived validator to unvalidated fields."""
    return [
        f if f.validator is not None else f.evolve(validator=_validator(f.name)) for f in fields
    ]


def _validator(name: str) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        cls = type(instance)
        check = _CHECKS.get((cls, name))
        if check is None:
            hints = typing.get_type_hints(cls)
            check = _compile(hints[name])
            _CHECKS[(cls, name)] = check
        check(value, f"{cls.__name__}.{attribute.alias or name}")

    return validate


def _fail(value: Any, field: str, expected: str) -> typing.NoReturn:
    raise ValidationError(f"expected {expected}, got {type_name(value)}", field=field)


def _compile(t: Any) -> Check:
    if t is Any or t is object:
        return lambda value, field: None
    origin = get_origin(t)
    if origin is Union or origin is types.UnionType:
        return _union([_compile(a) for a in get_args(t)], get_args(t))
    if origin is Literal:
        allowed = get_args(t)

        def check_literal(value: Any, field: str) -> None:
            if isinstance(value, bool) or value not in allowed:
                raise ValidationError(f"must be one of {allowed!r}, got {value!r}", field=field)

        return check_literal
    if origin in (list, tuple) or t in (list, tuple):
        return _sequence(t)
    if origin in (dict, Mapping) or t in (dict, Mapping):
        args = get_args(t)
        value_check = _compile(args[1]) if args else _compile(Any)

        def check_dict(value: Any, field: str) -> None:
            if not isinstance(value, Mapping):
                _fail(value, field, "a mapping")
            for key, item in value.items():
                if not isinstance(key, str):
                    _fail(key, field, "string keys")
                value_check(item, f"{field}.{key}")

        return check_dict
    return _leaf(t)


def _leaf(t: Any) -> Check:
    if t is type(None):
        return lambda value, field: None if value is None else _fail(value, field, "None")
    if t is int:
        return _instance(int, "an integer", no_bool=True)
    if t is float:
        return _instance(int | float, "a number", no_bool=True)
    if isinstance(t, type):
        return _instance(t, "a datetime" if t is dt.datetime else t.__name__)
    raise TypeError(f"unsupported annotation {t!r}")  # a programming error, caught by tests


def _instance(t: Any, expected: str, *, no_bool: bool = False) -> Check:
    def check(value: Any, field: str) -> None:
        if not isinstance(value, t) or (no_bool and isinstance(value, bool)):
            _fail(value, field, expected)

    return check


def _union(checks: list[Check], members: tuple[Any, ...]) -> Check:
    names = " or ".join(getattr(m, "__name__", str(m)) for m in members)
    others = [c for c, m in zip(checks, members, strict=True) if m is not type(None)]
    if len(others) == 1 and len(members) == 2:
        # X | None: report X's own error (more precise than "X or NoneType").
        inner = others[0]
        return lambda value, field: None if value is None else inner(value, field)

    def check_union(value: Any, field: str) -> None:
        for check in checks:
            try:
                check(value, field)
            except ValidationError:
                continue
            return
        _fail(value, field, names)

    return check_union


_NUMBER_TYPES: dict[Any, frozenset[type]] = {
    int: frozenset({int}),
    float: frozenset({int, float}),
    float | None: frozenset({int, float, type(None)}),
}


def _sequence(t: Any) -> Check:
    container = list if get_origin(t) is list or t is list else tuple
    args = [a for a in get_args(t) if a is not Ellipsis]
    homogeneous = container is list or (len(get_args(t)) == 2 and get_args(t)[1] is Ellipsis)
    kind = "a list" if container is list else "a tuple"
    if not args:
        return _instance(container, kind)
    numbers = _NUMBER_TYPES.get(args[0]) if homogeneous else None
    if numbers is not None:

        def check_numbers(value: Any, field: str) -> None:
            if not isinstance(value, container):
                _fail(value, field, kind)
            if not set(map(type, value)) <= numbers:
                bad = next(x for x in value if type(x) not in numbers)
                _fail(bad, f"{field}[]", f"numbers of type {args[0]}")

        return check_numbers
    items = [_compile(a) for a in args]

    def check_items(value: Any, field: str) -> None:
        if not isinstance(value, container):
            _fail(value, field, kind)
        if homogeneous:
            for i, item in enumerate(value):
                items[0](item, f"{field}[{i}]")
        elif len(value) != len(items):
            _fail(value, field, f"a tuple of {len(items)} items")
        else:
            for i, (item, check) in enumerate(zip(value, items, strict=True)):
                check(item, f"{field}[{i}]")

    return check_items
