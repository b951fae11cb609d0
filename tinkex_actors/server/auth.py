"""API keys and tenants.

A tenant is identified by a hash of its API key; that id is what the database stores as an
owner and what ``model_owner`` reports, so no key is ever written down or logged.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable

from tinkex_actors._constants import API_KEY_PREFIX
from tinkex_actors.errors import ConfigError

__all__ = ["KeyRing", "generate_api_key", "tenant_id"]

_TENANT_PREFIX = "tenant-"


def generate_api_key() -> str:
    """A fresh random key of the form ``tml-...``."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def tenant_id(api_key: str) -> str:
    """The stable, non-reversible tenant id of a key."""
    return _TENANT_PREFIX + hashlib.sha256(api_key.encode()).hexdigest()[:24]


class KeyRing:
    """The keys a server accepts.

    Args:
        keys: accepted keys; each must start with ``tml-`` (the official SDK refuses others).

    Raises:
        ConfigError: no key, or a key of the wrong form.
    """

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests: dict[bytes, str] = {}
        for key in keys:
            if not key.startswith(API_KEY_PREFIX) or len(key) <= len(API_KEY_PREFIX):
                raise ConfigError("api_key", f"API keys must start with {API_KEY_PREFIX!r}")
            self._digests[hashlib.sha256(key.encode()).digest()] = tenant_id(key)
        if not self._digests:
            raise ConfigError("api_key", "at least one API key is required")
        self._tenants = frozenset(self._digests.values())

    def tenant(self, presented: bytes | None) -> str | None:
        """The tenant of a presented key, or None when it is not accepted."""
        if not presented:
            return None
        digest = hashlib.sha256(presented).digest()
        for known, tenant in self._digests.items():
            if hmac.compare_digest(known, digest):
                return tenant
        return None

    def accepts_tenant(self, tenant: str) -> bool:
        """Whether ``tenant`` is the tenant of one of the accepted keys (JWTs name tenants)."""
        return tenant in self._tenants

    def __repr__(self) -> str:
        return f"KeyRing(<{len(self._digests)} keys>)"
