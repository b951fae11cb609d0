"""``tinkex server``: run the embedded Tinker-compatible server."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    from tinkex_actors.server.cli import run

    return run(args)


def register(subparsers: Any) -> None:
    """Add the ``server`` subcommand."""
    from tinkex_actors.server.cli import add_arguments

    parser = subparsers.add_parser(
        "server",
        help="run the embedded Tinker-compatible server",
        description="Run the embedded Tinker-compatible server (see docs/server.md).",
    )
    add_arguments(parser)
    parser.set_defaults(func=_run)
