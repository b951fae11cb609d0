"""``tinkex version``: the package version (and, with ``--json``, the wire version)."""

from __future__ import annotations

import argparse
import platform
from typing import Any

from tinkex_actors._constants import WIRE_SDK_VERSION
from tinkex_actors._version import __version__
from tinkex_actors.cli._common import add_output_options, emit_json

__all__ = ["register"]


def _version(args: argparse.Namespace) -> int:
    if args.json:
        emit_json(
            {
                "name": "tinkex_actors",
                "version": __version__,
                "wire_sdk_version": WIRE_SDK_VERSION,
                "python": platform.python_version(),
            }
        )
    else:
        print(f"tinkex_actors {__version__} (Tinker wire protocol of SDK {WIRE_SDK_VERSION})")
    return 0


def register(subparsers: Any) -> None:
    """Add ``version``."""
    parser = subparsers.add_parser(
        "version", help="print the version", description="Print the tinkex_actors version."
    )
    add_output_options(parser)
    parser.set_defaults(func=_version)
