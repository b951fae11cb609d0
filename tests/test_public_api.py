"""The package's public surface: a sorted ``__all__`` whose names all resolve."""

from __future__ import annotations

import importlib

import tinkex_actors


def test_all_is_sorted_and_unique() -> None:
    names = list(tinkex_actors.__all__)
    assert names == sorted(names)
    assert len(names) == len(set(names))


def test_every_exported_name_resolves() -> None:
    for name in tinkex_actors.__all__:
        assert getattr(tinkex_actors, name) is not None, name


def test_public_names_not_in_all_are_private_or_modules() -> None:
    exported = set(tinkex_actors.__all__)
    for name, value in vars(tinkex_actors).items():
        if name.startswith("_") or name in exported or name == "annotations":
            continue
        # Subpackages imported as a side effect of loading the package are fine.
        assert type(value).__name__ == "module", f"{name} is public but missing from __all__"


def test_errors_module_exports_sorted() -> None:
    errors = importlib.import_module("tinkex_actors.errors")
    assert errors.__all__ == sorted(errors.__all__)
    for name in errors.__all__:
        assert hasattr(errors, name), name
