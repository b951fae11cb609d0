"""Atomic file writes and the Hugging Face hub cache layout.

Two server processes may build or publish the default model at the same moment, so every file
is written to a private temporary name in its final directory and renamed into place: a reader
sees either no file or a complete one, never a torn one.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "atomic_write_bytes",
    "hub_cache_dir",
    "publish_files",
    "publish_snapshot",
    "ref_file",
    "snapshot_dir",
]

_HUB_REPO_PREFIX = "models--"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def hub_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """The Hugging Face hub cache, resolved as ``huggingface_hub`` resolves it.

    ``$HF_HUB_CACHE``, else the legacy ``$HUGGINGFACE_HUB_CACHE``, else ``$HF_HOME/hub``, else
    ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``. Read at call time (not
    import time), so a process that sets the variables before starting the engine is obeyed.
    """
    env = os.environ if env is None else env
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(key):
            return Path(env[key]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    xdg = env.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path("~/.cache").expanduser()
    return base / "huggingface" / "hub"


def snapshot_dir(hub_cache: Path, repo_id: str, revision: str) -> Path:
    """``<hub_cache>/models--<org>--<name>/snapshots/<revision>``."""
    return _repo_dir(hub_cache, repo_id) / "snapshots" / revision


def ref_file(hub_cache: Path, repo_id: str) -> Path:
    """``<hub_cache>/models--<org>--<name>/refs/main`` (holds the current revision)."""
    return _repo_dir(hub_cache, repo_id) / "refs" / "main"


def _repo_dir(hub_cache: Path, repo_id: str) -> Path:
    return hub_cache / (_HUB_REPO_PREFIX + repo_id.replace("/", "--"))


def publish_snapshot(source: Path, hub_cache: Path, repo_id: str, revision: str) -> Path:
    """Copy the files of ``source`` into the hub cache as ``repo_id`` at ``revision``.

    Files already there with the same size are left alone (the revision is a hash of the
    recipe, so equal names mean equal content); ``refs/main`` is pointed at ``revision`` so that
    ``from_pretrained(repo_id)`` resolves it offline. Returns the snapshot directory.
    """
    snapshot = snapshot_dir(hub_cache, repo_id, revision)
    snapshot.mkdir(parents=True, exist_ok=True)
    for item in sorted(source.iterdir()):
        if not item.is_file() or item.name.startswith("."):
            continue
        target = snapshot / item.name
        if target.is_file() and target.stat().st_size == item.stat().st_size:
            continue
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        try:
            shutil.copyfile(item, tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    _point_ref(hub_cache, repo_id, revision)
    return snapshot


def publish_files(files: Mapping[str, bytes], hub_cache: Path, repo_id: str, revision: str) -> Path:
    """Write ``files`` (name -> content) into the hub cache as ``repo_id`` at ``revision``.

    Like :func:`publish_snapshot`, but from memory: files already there with the same size
    are left alone, and ``refs/main`` is pointed at ``revision``. Returns the snapshot
    directory.
    """
    snapshot = snapshot_dir(hub_cache, repo_id, revision)
    for name, data in sorted(files.items()):
        target = snapshot / name
        if target.is_file() and target.stat().st_size == len(data):
            continue
        atomic_write_bytes(target, data)
    _point_ref(hub_cache, repo_id, revision)
    return snapshot


def _point_ref(hub_cache: Path, repo_id: str, revision: str) -> None:
    ref = ref_file(hub_cache, repo_id)
    if not ref.is_file() or ref.read_text().strip() != revision:
        atomic_write_bytes(ref, revision.encode())
