"""Checkpoint files under the data directory, and ``tinker://`` paths.

Three kinds share the machinery: ``weights`` (training state, ``save_weights``),
``sampler_weights`` (``save_weights_for_sampler``) and ``external_weights`` (an export for
download, ``save_weights_external``; its files may be age-encrypted, so nothing loads it).

A checkpoint is written into ``<data_dir>/tmp/<id>``, every file and the directory are
fsynced, the directory is renamed to ``<data_dir>/checkpoints/<id>`` and the parent fsynced;
only then is it recorded in SQLite. A crash at any point leaves either nothing listed or a
whole checkpoint. At start-up :meth:`CheckpointFiles.recover` deletes temp directories and
renamed directories that never got their row.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from tinkex_actors.server.http_errors import bad_request

__all__ = [
    "EXTERNAL_KIND",
    "KIND_TO_TYPE",
    "LOADABLE_KINDS",
    "TINKER_PATH_FORM",
    "CheckpointFiles",
    "TinkerPath",
    "parse_checkpoint_id",
    "parse_tinker_path",
]

#: Path segment -> checkpoint type reported by the REST API.
KIND_TO_TYPE = {"weights": "training", "sampler_weights": "sampler", "external_weights": "external"}
EXTERNAL_KIND = "external_weights"
#: Kinds whose files the engine can load (load_weights, sampling from a model_path).
LOADABLE_KINDS = ("weights", "sampler_weights")
TINKER_PATH_FORM = f"tinker://<run_id>/<{'|'.join(KIND_TO_TYPE)}>/<name>"
_SCHEME = "tinker://"


@dataclass(frozen=True)
class TinkerPath:
    """A parsed ``tinker://<run_id>/<kind>/<name>``."""

    run_id: str
    kind: str
    name: str

    @property
    def checkpoint_id(self) -> str:
        """``<kind>/<name>``, as the REST endpoints name a checkpoint."""
        return f"{self.kind}/{self.name}"

    def __str__(self) -> str:
        return f"{_SCHEME}{self.run_id}/{self.kind}/{self.name}"


def parse_checkpoint_id(checkpoint_id: str) -> tuple[str, str]:
    """Split ``<kind>/<name>``; 400 naming the expected form otherwise."""
    parts = checkpoint_id.split("/")
    if len(parts) != 2 or parts[0] not in KIND_TO_TYPE or not parts[1]:
        raise bad_request(
            f"invalid checkpoint id {checkpoint_id!r}; expected <{'|'.join(KIND_TO_TYPE)}>/<name>"
        )
    return parts[0], parts[1]


def parse_tinker_path(path: str, field: str = "path", *, loadable: bool = True) -> TinkerPath:
    """Parse a checkpoint path; 400 naming the expected form when it is malformed.

    Args:
        path: ``tinker://<run_id>/<kind>/<name>``.
        field: the request field, for the message.
        loadable: only kinds the engine can load (not ``external_weights`` exports).
    """
    if not path.startswith(_SCHEME):
        raise bad_request(f"{field}: invalid tinker path {path!r}; expected {TINKER_PATH_FORM}")
    parts = path[len(_SCHEME) :].split("/")
    if len(parts) != 3 or not parts[0] or parts[1] not in KIND_TO_TYPE or not parts[2]:
        raise bad_request(f"{field}: invalid tinker path {path!r}; expected {TINKER_PATH_FORM}")
    if loadable and parts[1] not in LOADABLE_KINDS:
        raise bad_request(
            f"{field}: {path} is an external weights export, which is for download only; "
            "use a weights/ or sampler_weights/ checkpoint"
        )
    return TinkerPath(parts[0], parts[1], parts[2])


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointFiles:
    """The ``checkpoints`` and ``tmp`` directories under the data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "checkpoints"
        self.tmp = data_dir / "tmp"
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def recover(self, known: set[str]) -> list[str]:
        """Delete leftovers of interrupted saves; returns the names removed."""
        removed: list[str] = []
        for entry in list(self.tmp.iterdir()):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(f"tmp/{entry.name}")
        for entry in list(self.root.iterdir()):
            if entry.name not in known:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(f"checkpoints/{entry.name}")
        return removed

    def new_temp(self) -> Path:
        """An empty directory to save into."""
        path = self.tmp / uuid.uuid4().hex
        path.mkdir()
        return path

    def commit(self, temp: Path) -> tuple[str, int]:
        """Make a filled temp directory durable and final; returns (dir_name, size in bytes)."""
        size = 0
        for entry in sorted(temp.rglob("*")):
            if entry.is_file():
                size += entry.stat().st_size
                fd = os.open(entry, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        _fsync_dir(temp)
        final = self.root / temp.name
        os.rename(temp, final)
        _fsync_dir(self.root)
        return temp.name, size

    def path(self, dir_name: str) -> Path:
        """Where a committed checkpoint lives."""
        return self.root / dir_name

    def files(self, dir_name: str) -> list[str]:
        """A committed checkpoint's regular files, as sorted POSIX paths relative to its root."""
        root = self.path(dir_name)
        return sorted(
            entry.relative_to(root).as_posix() for entry in root.rglob("*") if entry.is_file()
        )

    def remove(self, dir_name: str) -> None:
        """Delete a committed checkpoint's files."""
        shutil.rmtree(self.root / dir_name, ignore_errors=True)

    @staticmethod
    def discard(temp: Path) -> None:
        """Delete an unfinished temp directory."""
        shutil.rmtree(temp, ignore_errors=True)
