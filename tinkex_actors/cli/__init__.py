"""The ``tinkex`` command.

Each subcommand lives in its own ``_<name>_cmd.py`` module exposing
``register(subparsers)``, which adds its parser and sets ``func`` (called with the parsed
namespace, returning the exit status). Add a subcommand by writing such a module and listing
it in ``_COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

from tinkex_actors._version import __version__

__all__ = ["main"]

#: Subcommand modules, in help order.
_COMMANDS: tuple[str, ...] = ("tinkex_actors.cli._server_cmd",)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand."""
    parser = argparse.ArgumentParser(prog="tinkex", description="tinkex_actors command line.")
    parser.add_argument("--version", action="version", version=f"tinkex {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tinkex`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    status: int = func(args)
    return status
