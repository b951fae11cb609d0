"""``make demo`` / ``python -m tinkex_actors.demo``: fine-tune the tiny model on made-up facts.

Starts the embedded server (torch engine), trains a LoRA adapter on ``tinkex/tiny-llama``
(random weights) to complete the facts in ``facts.tsv``, samples greedily before and after,
saves a sampler checkpoint, downloads its archive, writes the loss curve, and stops the
server. Everything goes to ``./demo-output/`` unless ``--output`` says otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tinkex_actors.demo._run import DemoOptions, run_demo
from tinkex_actors.errors import TinkexError

#: ``TINKEX_DEMO_FAST=1`` is the same as ``--fast``.
ENV_FAST = "TINKEX_DEMO_FAST"
FAST_STEPS = 12


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected > 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The demo's command line."""
    defaults = DemoOptions()
    parser = argparse.ArgumentParser(
        prog="python -m tinkex_actors.demo",
        description="Fine-tune tinkex/tiny-llama with LoRA on the embedded server.",
    )
    add = parser.add_argument
    add("--steps", type=_positive_int, default=None, help=f"training steps ({defaults.steps})")
    add("--lr", type=_positive_float, default=defaults.learning_rate, help="Adam learning rate")
    add("--rank", type=_positive_int, default=defaults.rank, help="LoRA rank")
    add("--output", type=Path, default=defaults.output, help="output folder (%(default)s)")
    add("--facts", type=Path, default=None, help="your own facts (prompt<TAB>completion lines)")
    add(
        "--fast",
        action="store_true",
        help=f"{FAST_STEPS} steps (for tests; also {ENV_FAST}=1): the facts are not all learned",
    )
    add("--plain", action="store_true", help="a plain ASCII progress line (for logs)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit status."""
    ns = build_parser().parse_args(argv)
    fast = ns.fast or os.environ.get(ENV_FAST, "").lower() in {"1", "true", "yes", "on"}
    steps = ns.steps or (FAST_STEPS if fast else DemoOptions().steps)
    options = DemoOptions(
        steps=steps,
        learning_rate=ns.lr,
        rank=ns.rank,
        output=ns.output,
        facts=ns.facts,
        plain=ns.plain,
    )
    try:
        run_demo(options)
    except TinkexError as exc:
        sys.stderr.write(f"demo failed: {type(exc).__name__}: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("demo interrupted\n")
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
