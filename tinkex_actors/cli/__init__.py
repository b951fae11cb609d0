"""The ``tinkex`` command.

Each subcommand lives in its own ``_<name>_cmd.py`` module exposing
``register(subparsers)``, which adds its parser and sets ``func`` (called with the parsed
namespace, returning the exit status). Add a subcommand by writing such a module and listing
it in ``_COMMANDS``.

Errors never print a traceback: :func:`main` prints one line, ``tinkex: error: <what>``, on
stderr and returns 2 for bad input or configuration, 1 for anything else (130 on Ctrl-C).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from tinkex_actors._version import __version__
from tinkex_actors.errors import ConfigError, TinkexError, ValidationError

__all__ = ["build_parser", "main"]

#: Subcommand modules, in help order.
_COMMANDS: tuple[str, ...] = (
    "tinkex_actors.cli._checkpoint_cmd",
    "tinkex_actors.cli._run_cmd",
    "tinkex_actors.cli._sample_cmd",
    "tinkex_actors.cli._server_cmd",
    "tinkex_actors.cli._version_cmd",
)

#: Exit statuses.
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand."""
    parser = argparse.ArgumentParser(prog="tinkex", description="tinkex_actors command line.")
    parser.add_argument("--version", action="version", version=f"tinkex {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        importlib.import_module(name).register(subparsers)
    return parser


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tinkex`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        status: int = func(args)
    except KeyboardInterrupt:
        print("tinkex: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValidationError, ConfigError) as exc:
        print(f"tinkex: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except TinkexError as exc:
        print(f"tinkex: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:
        print(f"tinkex: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:  # a bug of ours: still one line, never a traceback
        print(f"tinkex: internal error: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    return status
