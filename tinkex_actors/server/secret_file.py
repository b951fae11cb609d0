"""Per-data-directory secrets (archive URL signatures, JWT signatures).

Each secret is generated once, written as hex into a file of the data directory with mode 0600
and fsynced, so every later start of the server on that directory signs with the same key:
archive URLs and JWTs handed out before a restart stay valid after it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["read_or_create_secret", "replace_secret"]

SECRET_BYTES = 32


def read_or_create_secret(path: Path) -> bytes:
    """The secret stored at ``path``, created (``SECRET_BYTES`` random bytes) if absent."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)
        return bytes.fromhex(path.read_text().strip())
    secret = secrets.token_bytes(SECRET_BYTES)
    with os.fdopen(fd, "w") as out:
        out.write(secret.hex())
        out.flush()
        os.fsync(out.fileno())
    return secret


def replace_secret(path: Path) -> bytes:
    """Write a new random secret to ``path`` (atomically: a temp file renamed over it)."""
    secret = secrets.token_bytes(SECRET_BYTES)
    temp = path.with_name(path.name + ".new")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secret.hex())
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, path)
    return secret
