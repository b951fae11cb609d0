"""External weights exports (``save_weights_external``, protocol §3.5): age encryption.

An export holds the engine's adapter files (PEFT ``adapter_model.safetensors`` and
``adapter_config.json``), which the client downloads file by file from signed URLs
(``external_weights_urls``). With ``age_encryption_recipients`` (at most
:data:`MAX_RECIPIENTS`: native ``age1...`` X25519 keys or SSH public keys) every file is
encrypted to all of them in the age format (age-encryption.org/v1) and stored as
``<name>.age``; the plaintext is deleted before the checkpoint is recorded, so only the
recipients can read the export. Encryption uses the ``pyrage`` package (part of the ``server``
extra); a server without it answers 400 to a request that asks for encryption.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tinkex_actors.server.http_errors import bad_request

__all__ = ["AGE_SUFFIX", "MAX_RECIPIENTS", "encrypt_directory", "parse_recipients"]

#: The official SDK's limit on recipients per export.
MAX_RECIPIENTS = 10
#: Suffix of an age-encrypted file (what the official clients expect).
AGE_SUFFIX = ".age"
_FIELD = "age_encryption_recipients"


def _pyrage() -> Any:
    try:
        return importlib.import_module("pyrage")
    except ImportError:
        raise bad_request(
            f"{_FIELD}: this server cannot encrypt exports (the pyrage package is not "
            "installed; install the 'server' extra)"
        ) from None


def parse_recipients(values: Sequence[object] | None) -> list[Any]:
    """Validate the recipients of an export; 400 naming the first bad one.

    Returns:
        pyrage recipient objects (empty: no encryption).
    """
    if not values:
        return []
    if len(values) > MAX_RECIPIENTS:
        raise bad_request(f"{_FIELD}: at most {MAX_RECIPIENTS} recipients, got {len(values)}")
    pyrage = _pyrage()
    recipients: list[Any] = []
    for i, value in enumerate(values):
        text = value.strip() if isinstance(value, str) else ""
        kind = pyrage.ssh if text.startswith("ssh-") else pyrage.x25519
        try:
            recipients.append(kind.Recipient.from_str(text))
        except (pyrage.RecipientError, ValueError, TypeError):
            raise bad_request(
                f"{_FIELD}[{i}]: not an age X25519 recipient (age1...) or an SSH public key"
            ) from None
    return recipients


def encrypt_directory(directory: Path, recipients: Sequence[Any]) -> None:
    """Replace every regular file under ``directory`` by its age encryption ``<name>.age``."""
    pyrage = _pyrage()
    for entry in sorted(p for p in directory.rglob("*") if p.is_file()):
        target = entry.with_name(entry.name + AGE_SUFFIX)
        pyrage.encrypt_file(str(entry), str(target), list(recipients))
        entry.unlink()
