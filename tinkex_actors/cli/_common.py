"""What the client subcommands share: connection flags, output (table or JSON), progress bar.

Connection: ``--base-url`` and ``--api-key`` override ``TINKER_BASE_URL`` / ``TINKER_API_KEY``
(the key is better left in the environment: command lines show up in process listings).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TextIO

import attrs
import orjson

from tinkex_actors.config import Config
from tinkex_actors.rest import RestClient
from tinkex_actors.wire import to_jsonable

__all__ = [
    "ProgressBar",
    "add_client_options",
    "add_output_options",
    "confirm",
    "emit_json",
    "format_size",
    "format_table",
    "format_time",
    "jsonable",
    "make_config",
    "non_negative_int",
    "positive_int",
    "rest_client",
]

#: The download bar's characters: empty, full.
_BAR_CHARS = "-#"


def add_client_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--base-url``, ``--api-key`` (or env), ``--timeout``, ``--max-retries``."""
    group = parser.add_argument_group("connection")
    group.add_argument("--base-url", help="server URL (default: $TINKER_BASE_URL, else prod)")
    group.add_argument("--api-key", help="API key (default: $TINKER_API_KEY)")
    group.add_argument("--timeout", type=float, help="HTTP read timeout in seconds")
    group.add_argument(
        "--max-retries", type=non_negative_int, help="HTTP retries per call (default 10)"
    )


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """``--json``: machine-readable output instead of a table."""
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def make_config(args: argparse.Namespace) -> Config:
    """The Config of the connection flags, the environment filling the gaps."""
    return Config.new(
        api_key=getattr(args, "api_key", None),
        base_url=getattr(args, "base_url", None),
        timeout=getattr(args, "timeout", None),
        max_retries=getattr(args, "max_retries", None),
    )


@contextlib.contextmanager
def rest_client(args: argparse.Namespace) -> Iterator[RestClient]:
    """A RestClient for the command's connection flags, closed afterwards."""
    with RestClient(make_config(args)) as rest:
        yield rest


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an int >= 0."""
    return _int_at_least(text, 0)


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    return _int_at_least(text, 1)


# ---------------------------------------------------------------------------- output
def jsonable(value: Any) -> Any:
    """Plain JSON data of wire types (and lists or dicts of them)."""
    if attrs.has(type(value)):
        return to_jsonable(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def emit_json(value: Any, out: TextIO | None = None) -> None:
    """Print ``value`` as indented JSON."""
    stream = out or sys.stdout
    stream.write(orjson.dumps(jsonable(value), option=orjson.OPT_INDENT_2).decode() + "\n")


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A left-aligned text table with a header line (no trailing spaces)."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in (headers, *rows)
    ]
    return "\n".join(lines)


def format_size(size: int | None) -> str:
    """Bytes as ``512 B``, ``1.5 KiB``, ``2.0 MiB`` ...; ``-`` when unknown."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - the loop returns at GiB


def format_time(when: dt.datetime | None) -> str:
    """A UTC timestamp to the second; ``-`` when absent."""
    if when is None:
        return "-"
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def confirm(question: str, *, stdin: TextIO | None = None, stderr: TextIO | None = None) -> bool:
    """Ask ``question [y/N]`` on stderr and read one line of stdin; only y/yes accepts."""
    err = stderr or sys.stderr
    err.write(f"{question} [y/N] ")
    err.flush()
    line = (stdin or sys.stdin).readline()
    return line.strip().lower() in ("y", "yes")


class ProgressBar:
    """A one-line progress bar on stderr: ``progress(downloaded, total)`` callbacks.

    tqdm draws it: on a terminal it is redrawn at most every ``interval`` seconds (and at the
    end); in a pipe only the final line is written, by :meth:`finish`.
    """

    def __init__(
        self, label: str, *, stream: TextIO | None = None, width: int = 30, interval: float = 0.1
    ) -> None:
        from tinkex_actors._progress import FieldBar

        self._label = label
        self._stream = stream or sys.stderr
        self._width = width
        self._last: tuple[int, int | None] = (0, None)
        tty = bool(getattr(self._stream, "isatty", lambda: False)())
        self._bar = FieldBar(
            total=None,
            desc=label,
            file=self._stream,
            ascii=_BAR_CHARS,
            bar_format=self._format(None),
            mininterval=interval,
            leave=True,
            disable=not tty,
            fields=self._fields(0, None),
        )

    def _format(self, total: int | None) -> str:
        if total:
            return f"{{desc}} [{{bar:{self._width}}}] {{percentage:5.1f}}% {{done}} / {{size}}"
        return "{desc} {done}"

    @staticmethod
    def _fields(done: int, total: int | None) -> dict[str, object]:
        return {"done": format_size(done), "size": format_size(total)}

    def render(self, done: int, total: int | None) -> str:
        """The bar's text for ``done`` of ``total`` bytes."""
        from tinkex_actors._progress import FieldBar

        return FieldBar.line(
            min(done, total) if total else done,
            total or None,
            fields=self._fields(done, total),
            prefix=self._label,
            ascii=_BAR_CHARS,
            bar_format=self._format(total),
        )

    def __call__(self, done: int, total: int | None) -> None:
        self._last = (done, total)
        bar = self._bar
        if bar.disable:
            return
        bar.fields.update(self._fields(done, total))
        if (total or None) != bar.total:
            bar.total = total or None
            bar.bar_format = self._format(total)
        bar.update((min(done, total) if total else done) - bar.n)

    def finish(self) -> None:
        """Draw the final state and end the line."""
        if self._bar.disable:
            self._stream.write(self.render(*self._last) + "\n")
            self._stream.flush()
            return
        self._bar.close()  # draws the final state
