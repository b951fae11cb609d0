"""Keeping secrets out of reprs, logs, exceptions and telemetry.

Secrets are the API key, the Cloudflare Access secret, credentials embedded in a proxy URL and
the query string of signed download URLs. Everything shown to a human or a handler goes through
one of these helpers first.
"""

from __future__ import annotations

import hashlib
import urllib.parse

__all__ = ["REDACTED", "fingerprint", "mask_key", "redact_url", "scrub"]

#: What replaces a secret in text.
REDACTED = "***"


def fingerprint(secret: str) -> str:
    """Return a short, stable, one-way fingerprint of ``secret`` (16 hex digits).

    Used to tell tenants apart in registries and telemetry without holding the key. A keyed
    BLAKE2b (``person``) keeps these fingerprints from matching any other hash of the key.
    """
    return hashlib.blake2b(secret.encode(), digest_size=8, person=b"tinkex-tenant").hexdigest()


def mask_key(key: str | None) -> str:
    """Show only the kind of an API key: ``'tml-***'``, ``'eyJ***'`` (a JWT) or ``'***'``."""
    if key is None:
        return "None"
    for prefix in ("tml-", "eyJ"):
        if key.startswith(prefix):
            return f"{prefix}{REDACTED}"
    return REDACTED


def redact_url(url: str) -> str:
    """Drop credentials (``user:pass@``) and the query string (signatures) from a URL."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = REDACTED if parts.query else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """Replace every occurrence of each non-empty secret in ``text`` by :data:`REDACTED`."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    return text
