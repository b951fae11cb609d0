"""``tinkex checkpoint list|info|download|delete|publish|unpublish|set-ttl``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tinkex_actors.checkpoint_download import CheckpointDownload
from tinkex_actors.cli._common import (
    ProgressBar,
    add_client_options,
    add_output_options,
    confirm,
    emit_json,
    format_size,
    format_table,
    format_time,
    non_negative_int,
    positive_int,
    rest_client,
)
from tinkex_actors.errors import NotFoundError, TinkexError
from tinkex_actors.rest import RestClient
from tinkex_actors.types import Checkpoint, ParsedCheckpointTinkerPath

__all__ = ["register"]

_HEADERS = ("TINKER PATH", "TYPE", "SIZE", "PUBLIC", "CREATED", "EXPIRES")


def _row(ckpt: Checkpoint) -> list[str]:
    return [
        ckpt.tinker_path,
        ckpt.checkpoint_type,
        format_size(ckpt.size_bytes),
        "yes" if ckpt.public else "no",
        format_time(ckpt.time),
        format_time(ckpt.expires_at),
    ]


def _parse_paths(paths: list[str]) -> list[ParsedCheckpointTinkerPath]:
    # Every path is checked before anything is sent.
    return [ParsedCheckpointTinkerPath.from_tinker_path(p) for p in paths]


# ---------------------------------------------------------------------------- list
def _list(args: argparse.Namespace) -> int:
    with rest_client(args) as rest:
        cursor: Any = None
        if args.limit == 0:
            if args.run_id:
                found = list(rest.iter_checkpoints(args.run_id))
            else:
                found = list(rest.iter_user_checkpoints())
        elif args.run_id:
            page = rest.list_checkpoints(args.run_id, limit=args.limit, offset=args.offset)
            found, cursor = page.checkpoints, page.cursor
        else:
            page = rest.list_user_checkpoints(args.limit, args.offset)
            found, cursor = page.checkpoints, page.cursor
    if args.json:
        emit_json({"checkpoints": found, "cursor": cursor})
        return 0
    if not found:
        print("No checkpoints.")
        return 0
    print(format_table(_HEADERS, [_row(c) for c in found]))
    if cursor is not None:
        last = cursor.offset + len(found)
        print(f"Showing {cursor.offset + 1}-{last} of {cursor.total_count} checkpoints.")
    return 0


# ---------------------------------------------------------------------------- info
def _find(rest: RestClient, parsed: ParsedCheckpointTinkerPath) -> Checkpoint:
    for ckpt in rest.iter_checkpoints(parsed.training_run_id):
        if ckpt.tinker_path == parsed.tinker_path:
            return ckpt
    raise NotFoundError(f"no checkpoint {parsed.tinker_path}", status_code=404)


def _info(args: argparse.Namespace) -> int:
    parsed = ParsedCheckpointTinkerPath.from_tinker_path(args.path)
    with rest_client(args) as rest:
        ckpt = _find(rest, parsed)
        weights = rest.get_weights_info_by_tinker_path(parsed.tinker_path)
    if args.json:
        emit_json({"checkpoint": ckpt, "weights_info": weights})
        return 0
    rows = [
        ("Tinker path", ckpt.tinker_path),
        ("Training run", parsed.training_run_id),
        ("Checkpoint id", ckpt.checkpoint_id),
        ("Type", ckpt.checkpoint_type),
        ("Size", format_size(ckpt.size_bytes)),
        ("Public", "yes" if ckpt.public else "no"),
        ("Created", format_time(ckpt.time)),
        ("Expires", format_time(ckpt.expires_at)),
        ("Base model", weights.base_model),
        ("LoRA", f"rank {weights.lora_rank}" if weights.is_lora else "no"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")
    return 0


# ---------------------------------------------------------------------------- download
def _download(args: argparse.Namespace) -> int:
    parsed = ParsedCheckpointTinkerPath.from_tinker_path(args.path)
    bar = None if args.no_progress or args.json else ProgressBar("Downloading")
    with rest_client(args) as rest:
        target = CheckpointDownload.download(
            rest, parsed.tinker_path, output_dir=args.output, force=args.force, progress=bar
        )
    if bar is not None:
        bar.finish()
    files = sorted(p.name for p in target.iterdir())
    if args.json:
        emit_json({"tinker_path": parsed.tinker_path, "path": str(target), "files": files})
    else:
        print(target)
    return 0


# ---------------------------------------------------------------------------- delete
def _delete(args: argparse.Namespace) -> int:
    parsed = _parse_paths(args.paths)
    count = len(parsed)
    if not args.yes:
        what = parsed[0].tinker_path if count == 1 else f"{count} checkpoints"
        if not confirm(f"Delete {what}? This cannot be undone."):
            print("tinkex: aborted, nothing deleted", file=sys.stderr)
            return 1
    failed = 0
    with rest_client(args) as rest:
        for path in parsed:
            try:
                rest.delete_checkpoint_by_tinker_path(path.tinker_path)
            except TinkexError as exc:
                failed += 1
                print(f"tinkex: error: {path.tinker_path}: {' '.join(str(exc).split())}",
                      file=sys.stderr)  # fmt: skip
            else:
                print(f"Deleted {path.tinker_path}")
    return 1 if failed else 0


# ---------------------------------------------------------------------------- visibility, TTL
def _publish(args: argparse.Namespace) -> int:
    parsed = ParsedCheckpointTinkerPath.from_tinker_path(args.path)
    with rest_client(args) as rest:
        rest.publish_checkpoint_from_tinker_path(parsed.tinker_path)
    print(f"Published {parsed.tinker_path}")
    return 0


def _unpublish(args: argparse.Namespace) -> int:
    parsed = ParsedCheckpointTinkerPath.from_tinker_path(args.path)
    with rest_client(args) as rest:
        rest.unpublish_checkpoint_from_tinker_path(parsed.tinker_path)
    print(f"Unpublished {parsed.tinker_path}")
    return 0


def _set_ttl(args: argparse.Namespace) -> int:
    parsed = ParsedCheckpointTinkerPath.from_tinker_path(args.path)
    ttl = None if args.remove else args.ttl
    with rest_client(args) as rest:
        rest.set_checkpoint_ttl_from_tinker_path(parsed.tinker_path, ttl)
    print(
        f"Removed the TTL of {parsed.tinker_path}"
        if ttl is None
        else f"{parsed.tinker_path} expires in {ttl} s"
    )
    return 0


def register(subparsers: Any) -> None:
    """Add ``checkpoint`` and its subcommands."""
    parser = subparsers.add_parser(
        "checkpoint",
        help="list, inspect, download, delete and publish checkpoints",
        description="Manage checkpoints (tinker://<run>/<weights|sampler_weights>/<name>).",
    )
    sub = parser.add_subparsers(dest="checkpoint_command", metavar="ACTION", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        child: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
        add_client_options(child)
        return child

    listing = action("list", "list your checkpoints (newest first)")
    listing.add_argument("--run-id", help="only this training run's checkpoints")
    listing.add_argument(
        "--limit", type=non_negative_int, default=20, help="page size; 0 lists every checkpoint"
    )
    listing.add_argument("--offset", type=non_negative_int, default=0, help="checkpoints to skip")
    add_output_options(listing)
    listing.set_defaults(func=_list)

    info = action("info", "show one checkpoint and what it holds")
    info.add_argument("path", help="tinker:// path")
    add_output_options(info)
    info.set_defaults(func=_info)

    down = action("download", "download and extract a checkpoint archive")
    down.add_argument("path", help="tinker:// path")
    down.add_argument(
        "-o", "--output", type=Path, default=None, help="parent directory (default: here)"
    )
    down.add_argument("--force", action="store_true", help="replace an existing download")
    down.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_output_options(down)
    down.set_defaults(func=_download)

    delete = action("delete", "delete checkpoints (asks first unless --yes)")
    delete.add_argument("paths", nargs="+", metavar="path", help="tinker:// paths")
    delete.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    delete.set_defaults(func=_delete)

    publish = action("publish", "make a checkpoint public")
    publish.add_argument("path", help="tinker:// path")
    publish.set_defaults(func=_publish)

    unpublish = action("unpublish", "make a public checkpoint private")
    unpublish.add_argument("path", help="tinker:// path")
    unpublish.set_defaults(func=_unpublish)

    ttl = action("set-ttl", "expire a checkpoint after a delay, or never")
    ttl.add_argument("path", help="tinker:// path")
    choice = ttl.add_mutually_exclusive_group(required=True)
    choice.add_argument("--ttl", type=positive_int, metavar="SECONDS", help="seconds from now")
    choice.add_argument("--remove", action="store_true", help="never expire")
    ttl.set_defaults(func=_set_ttl)
