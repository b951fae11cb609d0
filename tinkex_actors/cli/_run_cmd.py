"""``tinkex run list|info``: training runs."""

from __future__ import annotations

import argparse
from typing import Any

from tinkex_actors._constants import TINKER_SCHEME
from tinkex_actors.cli._common import (
    add_client_options,
    add_output_options,
    emit_json,
    format_table,
    format_time,
    non_negative_int,
    rest_client,
)
from tinkex_actors.types import TrainingRun

__all__ = ["register"]

_HEADERS = ("RUN ID", "BASE MODEL", "LORA RANK", "LAST REQUEST", "LAST CHECKPOINT")


def _last(run: TrainingRun) -> str:
    newest = [c for c in (run.last_checkpoint, run.last_sampler_checkpoint) if c is not None]
    if not newest:
        return "-"
    return max(newest, key=lambda c: c.time).tinker_path


def _row(run: TrainingRun) -> list[str]:
    rank = "-" if run.lora_rank is None else str(run.lora_rank)
    return [
        run.training_run_id,
        run.base_model,
        rank,
        format_time(run.last_request_time),
        _last(run),
    ]


def _list(args: argparse.Namespace) -> int:
    cursor: Any = None
    with rest_client(args) as rest:
        if args.limit == 0:
            runs = list(rest.iter_training_runs(access_scope=args.access_scope))
        else:
            page = rest.list_training_runs(args.limit, args.offset, access_scope=args.access_scope)
            runs, cursor = page.training_runs, page.cursor
    if args.json:
        emit_json({"training_runs": runs, "cursor": cursor})
        return 0
    if not runs:
        print("No training runs.")
        return 0
    print(format_table(_HEADERS, [_row(r) for r in runs]))
    if cursor is not None:
        print(
            f"Showing {cursor.offset + 1}-{cursor.offset + len(runs)} of {cursor.total_count} runs."
        )
    return 0


def _info(args: argparse.Namespace) -> int:
    with rest_client(args) as rest:
        if args.run.startswith(TINKER_SCHEME):
            run = rest.get_training_run_by_tinker_path(args.run, access_scope=args.access_scope)
        else:
            run = rest.get_training_run(args.run, access_scope=args.access_scope)
    if args.json:
        emit_json(run)
        return 0
    rows = [
        ("Run id", run.training_run_id),
        ("Base model", run.base_model),
        ("Owner", run.model_owner),
        ("LoRA", f"rank {run.lora_rank}" if run.is_lora else "no"),
        ("Corrupted", "yes" if run.corrupted else "no"),
        ("Last request", format_time(run.last_request_time)),
        ("Last checkpoint", run.last_checkpoint.tinker_path if run.last_checkpoint else "-"),
        (
            "Last sampler checkpoint",
            run.last_sampler_checkpoint.tinker_path if run.last_sampler_checkpoint else "-",
        ),
    ]
    for key, value in sorted((run.user_metadata or {}).items()):
        rows.append((f"metadata.{key}", value))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``run`` and its subcommands."""
    parser = subparsers.add_parser(
        "run", help="list and inspect training runs", description="Inspect training runs."
    )
    sub = parser.add_subparsers(dest="run_command", metavar="ACTION", required=True)
    scope_help = "owned (default) or accessible (adds others' runs with public checkpoints)"

    listing = sub.add_parser("list", help="list training runs", description="List training runs.")
    add_client_options(listing)
    listing.add_argument(
        "--limit", type=non_negative_int, default=20, help="page size; 0 lists every run"
    )
    listing.add_argument("--offset", type=non_negative_int, default=0, help="runs to skip")
    listing.add_argument(
        "--access-scope", choices=("owned", "accessible"), default="owned", help=scope_help
    )
    add_output_options(listing)
    listing.set_defaults(func=_list)

    info = sub.add_parser("info", help="show one training run", description="Show a training run.")
    add_client_options(info)
    info.add_argument("run", help="training run id, or a tinker:// checkpoint path of it")
    info.add_argument(
        "--access-scope", choices=("owned", "accessible"), default="owned", help=scope_help
    )
    add_output_options(info)
    info.set_defaults(func=_info)
