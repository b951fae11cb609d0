"""Extract a checkpoint archive without letting any member land outside its directory.

Two independent guards. First every member is checked before anything is written: absolute
names (``/x``, ``C:\\x``), ``..`` components, members below a symlink member, symlinks whose
target is absolute or holds ``..``, hard links to anything but an earlier regular file, and
devices, FIFOs or other special members all raise :class:`UnsafeArchiveError`, naming the
member. Then :mod:`tarfile`'s ``data`` filter extracts (it also drops permission bits such as
setuid and refuses anything its own checks dislike). Extraction goes into a fresh, empty
directory, so no link already on disk can redirect a write.
"""

from __future__ import annotations

import os
import re
import tarfile
import zlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Final

from tinkex_actors.errors import CheckpointDownloadError, UnsafeArchiveError

__all__ = ["check_members", "extract_safely"]

_DRIVE: Final = re.compile(r"^[A-Za-z]:")


def _refuse(member: tarfile.TarInfo, why: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"unsafe archive member {member.name!r}: {why}; nothing extracted")


def _parts(name: str) -> tuple[str, ...]:
    return tuple(p for p in PurePosixPath(name).parts if p not in ("", "."))


def _is_absolute(name: str) -> bool:
    return name.startswith(("/", "\\")) or _DRIVE.match(name) is not None


def check_members(members: Sequence[tarfile.TarInfo]) -> None:
    """Raise :class:`UnsafeArchiveError` for the first member that could escape or is special."""
    links: set[tuple[str, ...]] = set()
    files: set[tuple[str, ...]] = set()
    for member in members:
        name = member.name
        if "\x00" in name or _is_absolute(name):
            raise _refuse(member, "absolute path")
        parts = _parts(name)
        if ".." in parts:
            raise _refuse(member, "'..' in its path")
        if not parts:
            if member.isdir():
                continue  # the archive root itself ("./")
            raise _refuse(member, "empty name")
        for depth in range(1, len(parts)):
            if parts[:depth] in links:
                raise _refuse(member, f"lies below the link {'/'.join(parts[:depth])!r}")
        if member.ischr() or member.isblk():
            raise _refuse(member, "device file")
        if member.isfifo():
            raise _refuse(member, "FIFO")
        if member.issym():
            target = member.linkname
            if not target or _is_absolute(target) or ".." in _parts(target):
                raise _refuse(member, f"symlink to {target!r} (outside the checkpoint)")
            links.add(parts)
        elif member.islnk():
            target_parts = _parts(member.linkname)
            if _is_absolute(member.linkname) or target_parts not in files:
                raise _refuse(member, f"hard link to {member.linkname!r} (not a file of it)")
        elif member.isfile():
            files.add(parts)
        elif not member.isdir():
            raise _refuse(member, "not a file, directory or link")


def extract_safely(archive: Path, destination: Path) -> list[str]:
    """Extract ``archive`` (tar, optionally gzip/bz2/xz) into the empty ``destination``.

    Returns:
        The names of the regular files extracted.

    Raises:
        UnsafeArchiveError: a member could escape ``destination`` or is special.
        CheckpointDownloadError: the archive is corrupt or not a tar, or writing failed.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            check_members(members)
            tar.extractall(destination, members=members, filter="data")
    except tarfile.FilterError as exc:
        raise UnsafeArchiveError(f"unsafe archive member: {exc}; extraction abandoned") from exc
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise CheckpointDownloadError(
            f"the checkpoint archive is not a readable tar: {exc}"
        ) from exc
    except OSError as exc:
        raise CheckpointDownloadError(f"could not extract the checkpoint archive: {exc}") from exc
    _verify_inside(destination)
    return [m.name for m in members if m.isfile()]


def _verify_inside(destination: Path) -> None:
    # Belt and braces: every link that was created must still resolve inside.
    root = os.path.realpath(destination)
    for dirpath, dirnames, filenames in os.walk(destination):
        for entry in (*dirnames, *filenames):
            path = os.path.join(dirpath, entry)
            if os.path.islink(path):
                real = os.path.realpath(path)
                if os.path.commonpath([root, real]) != root:
                    raise UnsafeArchiveError(
                        f"archive link {os.path.relpath(path, destination)!r} resolves outside "
                        "the checkpoint directory"
                    )
