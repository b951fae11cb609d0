"""How a :class:`~tinkex_actors.config.Config` option is declared, once.

Each option is one attrs field made by :func:`option`, which carries everything about it: the
default, the check that validates and normalizes a value, the environment variable
:meth:`Config.new <tinkex_actors.config.Config.new>` falls back to, how ``repr`` shows it, and
its documentation line. Everything else is derived from those declarations by iterating
:func:`declared`: validation, the environment fallback, ``with_``, the masked ``repr``, the
``Attributes`` section of Config's docstring (:func:`attributes_section`) and the option table
of ``docs/configuration.md`` (:func:`markdown_table`, written by ``python docs/gen_api.py``
and compared by ``tests/test_config.py``).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, Literal

import attrs

from tinkex_actors.errors import ConfigError

__all__ = [
    "Check",
    "EnvKind",
    "FrozenMap",
    "Option",
    "TABLE_BEGIN",
    "TABLE_END",
    "attributes_section",
    "config_fail",
    "declared",
    "env_text",
    "env_value",
    "markdown_table",
    "option",
]

#: ``(option name, value) -> normalized value``; raises :class:`ConfigError` naming the option.
Check = Callable[[str, Any], Any]
#: How :meth:`Config.new` reads an option's variable: as text (blank: unset), as a flag, or
#: through the credential lookup (``_credentials``), which keeps its own order and origins.
EnvKind = Literal["text", "flag", "credential"]

_METADATA_KEY: Final = "tinkex_option"
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})
#: The lines around the generated table in ``docs/configuration.md``.
TABLE_BEGIN: Final = (
    "<!-- option table: generated from tinkex_actors/config.py by python docs/gen_api.py -->"
)
TABLE_END: Final = "<!-- end of the option table -->"


@attrs.frozen
class Option:
    """What one declaration says about an option, besides its name, type and default."""

    check: Check
    doc: str
    env: str | None = None
    env_kind: EnvKind = "text"
    env_doc: str | None = None
    unit: str | None = None
    shown_default: str | None = None
    show: Callable[[Any], str] = repr
    secret: bool = False
    blank_means_unset: bool = False


def option(
    default: Any,
    check: Check,
    *,
    doc: str,
    env: str | None = None,
    env_kind: EnvKind = "text",
    env_doc: str | None = None,
    unit: str | None = None,
    shown_default: str | None = None,
    show: Callable[[Any], str] = repr,
    secret: bool = False,
    blank_means_unset: bool = False,
) -> Any:
    """Declare a Config option: an attrs field whose metadata holds its :class:`Option`.

    Args:
        default: the value when neither the caller nor the environment gives one.
        check: validates a value and returns it normalized (see :data:`Check`).
        doc: one line of documentation (Markdown), shown in the docstring and the docs table.
        env: the environment variable :meth:`Config.new` falls back to.
        env_kind: how that variable is read (see :data:`EnvKind`).
        env_doc: the docs table's environment cell, when more than the variable's name.
        unit: printed after the default (``"s"``: ``60 s``).
        shown_default: the docs' default cell, when the value itself says it badly.
        show: how ``repr`` shows a value that is set (secrets are masked here).
        secret: the value is a secret (listed in ``Config.SECRET_FIELDS``).
        blank_means_unset: an explicit ``""`` passed to :meth:`Config.new` falls back to the
            environment too.
    """
    spec = Option(
        check=check,
        doc=doc,
        env=env,
        env_kind=env_kind,
        env_doc=env_doc,
        unit=unit,
        shown_default=shown_default,
        show=show,
        secret=secret,
        blank_means_unset=blank_means_unset,
    )
    return attrs.field(default=default, metadata={_METADATA_KEY: spec})


def declared(cls: type) -> Iterator[tuple[attrs.Attribute[Any], Option]]:
    """Every option of attrs class ``cls``, in declaration order, with its field."""
    for field in attrs.fields(cls):
        spec = field.metadata.get(_METADATA_KEY)
        if spec is not None:
            yield field, spec


def config_fail(field: str, message: str) -> ConfigError:
    """The shared scalar checks' ``fail`` for Config: the error names the option even when
    the check names a part of it (``user_metadata.key``), which the message then shows."""
    name, _, part = field.partition(".")
    return ConfigError(name, f"{message} (at {field})" if part else message)


# ------------------------------------------------------------------------------ environment
def env_text(env: Mapping[str, str], variable: str) -> str | None:
    """The stripped value of ``variable`` in ``env``; None when unset or blank."""
    return env.get(variable, "").strip() or None


def env_value(spec: Option, name: str, env: Mapping[str, str]) -> object | None:
    """The value ``env`` gives option ``name`` (None: unset). ``credential`` options are not
    read here."""
    if spec.env is None or spec.env_kind == "credential":
        return None
    raw = env_text(env, spec.env)
    if raw is None:
        return None
    if spec.env_kind == "text":
        return raw
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(name, f"{spec.env}={lowered!r} is not one of {sorted(_TRUE | _FALSE)}")


# ------------------------------------------------------------------------------ values
class FrozenMap(Mapping[str, str]):
    """An immutable, hashable ``str -> str`` mapping (the form Config stores mappings in)."""

    __slots__ = ("_data", "_hash")

    def __init__(self, data: Mapping[str, str]) -> None:
        self._data = dict(data)
        self._hash = hash(frozenset(self._data.items()))

    def __getitem__(self, key: str) -> str:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self._data == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return repr(self._data)


# ------------------------------------------------------------------------------ documentation
def _default_text(field: attrs.Attribute[Any], spec: Option) -> str:
    if spec.shown_default is not None:
        return spec.shown_default
    value = field.default
    if spec.unit is not None:
        return f"{value:g} {spec.unit}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value!r}`"


def _env_text(spec: Option) -> str:
    if spec.env_doc is not None:
        return spec.env_doc
    return "" if spec.env is None else f"`{spec.env}`"


def attributes_section(cls: type) -> str:
    """The ``Attributes:`` section of ``cls``'s docstring (Google style), one entry an option."""
    lines = ["Attributes:"]
    for field, spec in declared(cls):
        text = f"{field.name}: {spec.doc}. Default: {_default_text(field, spec)}."
        if spec.env is not None:
            text += f" Environment: {_env_text(spec)}."
        lines += textwrap.wrap(
            text,
            width=92,
            initial_indent="    ",
            subsequent_indent="        ",
            break_on_hyphens=False,
        )
    return "\n".join(lines)


def markdown_table(cls: type) -> str:
    """The option table of ``docs/configuration.md``, between its marker lines."""
    rows = [TABLE_BEGIN, "| option | environment | default | notes |", "|---|---|---|---|"]
    for field, spec in declared(cls):
        cells = (f"`{field.name}`", _env_text(spec), _default_text(field, spec), spec.doc)
        rows.append(" ".join(["|", " | ".join(cells), "|"]).replace("|  |", "| |"))
    rows.append(TABLE_END)
    return "\n".join(rows) + "\n"
