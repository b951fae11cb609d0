"""Signed, expiring download URLs and the streams behind them.

The signature is HMAC-SHA256 over ``<path>\\n<expires>`` with a secret generated once per
data directory (``archive_secret.key``, mode 0600). The download routes need no API key: the
URL is the capability. An altered path, expiry or signature, or an expired URL, gets 403.
Two kinds of URL are signed: a checkpoint's tar archive (path ``<run>/<kind>/<name>``) and one
file of a checkpoint (path ``file:<run>/<kind>/<name>/<relpath>``, used for external weights);
the prefix keeps one kind's signature from being valid for the other.

The tar is produced by a generator, one 64 KiB block at a time; files are opened before the
first byte is sent, so deleting the checkpoint mid-download cannot truncate it. A single file
is streamed the same way (:class:`FileStream`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from tinkex_actors.server.secret_file import read_or_create_secret

__all__ = ["ArchiveSigner", "FileStream", "TarStream", "file_signing_path"]

SECRET_FILE = "archive_secret.key"
_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE
_CHUNK = 64 * 1024


class ArchiveSigner:
    """Signs and verifies archive paths with the data directory's secret."""

    def __init__(self, data_dir: Path) -> None:
        self._secret = read_or_create_secret(data_dir / SECRET_FILE)

    def sign(self, path: str, expires: int) -> str:
        """The hex signature of ``path`` valid until ``expires`` (Unix seconds)."""
        message = f"{path}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def verify(self, path: str, expires: int, signature: str, now: float) -> bool:
        """Whether the signature matches and has not expired."""
        if now > expires:
            return False
        return hmac.compare_digest(self.sign(path, expires), signature)

    def __repr__(self) -> str:
        return "ArchiveSigner(<secret>)"


def file_signing_path(run_id: str, kind: str, name: str, relpath: str) -> str:
    """What a one-file download URL signs (distinct from any archive's signed path)."""
    return f"file:{run_id}/{kind}/{name}/{relpath}"


class FileStream:
    """One regular file, opened now and streamed in 64 KiB chunks.

    Args:
        path: the file.

    Raises:
        FileNotFoundError: the file is gone (or is not a regular file).
    """

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise FileNotFoundError(path)
        self._handle: BinaryIO = path.open("rb")
        #: Bytes the stream yields.
        self.size = os.fstat(self._handle.fileno()).st_size

    def __iter__(self) -> Iterator[bytes]:
        remaining = self.size
        try:
            while remaining > 0:
                chunk = self._handle.read(min(_CHUNK, remaining))
                if not chunk:
                    raise OSError(f"{self._handle.name} shrank while being sent")
                remaining -= len(chunk)
                yield chunk
        finally:
            self.close()

    def close(self) -> None:
        """Close the file."""
        self._handle.close()


def _padding(size: int, unit: int) -> int:
    return (unit - size % unit) % unit


class TarStream:
    """An uncompressed tar of a directory's regular files (at the archive root).

    Args:
        directory: the checkpoint directory.

    Raises:
        FileNotFoundError: the directory is gone.
    """

    def __init__(self, directory: Path) -> None:
        self._members: list[tuple[tarfile.TarInfo, bytes, BinaryIO]] = []
        for entry in sorted(directory.iterdir()):
            if not entry.is_file():
                continue
            handle = entry.open("rb")
            stat = os.fstat(handle.fileno())
            info = tarfile.TarInfo(entry.name)
            info.size = stat.st_size
            info.mtime = int(stat.st_mtime)
            info.mode = 0o644
            self._members.append((info, info.tobuf(format=tarfile.PAX_FORMAT), handle))
        body = sum(
            len(header) + info.size + _padding(info.size, _BLOCK)
            for info, header, _ in self._members
        )
        body += 2 * _BLOCK
        #: Total bytes the stream yields.
        self.size = body + _padding(body, _RECORD)

    def __iter__(self) -> Iterator[bytes]:
        written = 0
        try:
            for info, header, handle in self._members:
                yield header
                remaining = info.size
                while remaining > 0:
                    chunk = handle.read(min(_CHUNK, remaining))
                    if not chunk:
                        raise OSError(f"{info.name} shrank while being archived")
                    remaining -= len(chunk)
                    yield chunk
                pad = _padding(info.size, _BLOCK)
                if pad:
                    yield b"\0" * pad
                written += len(header) + info.size + pad
            yield b"\0" * (self.size - written)
        finally:
            self.close()

    def close(self) -> None:
        """Close the open files."""
        for _, _, handle in self._members:
            handle.close()
