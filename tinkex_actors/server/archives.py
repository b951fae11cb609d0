"""Signed, expiring archive URLs and the streamed tar behind them.

The signature is HMAC-SHA256 over ``<path>\\n<expires>`` with a secret generated once per
data directory (``archive_secret.key``, mode 0600). The download route needs no API key: the
URL is the capability. An altered path, expiry or signature, or an expired URL, gets 403.

The tar is produced by a generator, one 64 KiB block at a time; files are opened before the
first byte is sent, so deleting the checkpoint mid-download cannot truncate it.
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

__all__ = ["ArchiveSigner", "TarStream"]

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
