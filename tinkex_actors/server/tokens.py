"""JWTs for ``--jwt-auth`` (protocol §1.2): issued by ``auth/token``, accepted in ``X-API-Key``.

A token is a standard compact JWT, ``header.payload.signature`` in unpadded base64url, signed
with HMAC-SHA256 under a secret kept in the data directory (``jwt_secret.key``, like the
archive secret), so tokens survive a restart of the server on the same directory. Claims:

* ``sub`` and ``org_id``: the tenant id of the key that was exchanged (a hash of the key,
  never the key); the official SDK's ``whoami()`` reads both;
* ``iat`` / ``exp``: issue and expiry times (whole Unix seconds; ``exp - iat`` is at least
  the configured lifetime, and the SDK refreshes at about half of it);
* ``iss``: this server.

A token is accepted only while unexpired, correctly signed, with exactly the header this
server writes (so no ``alg`` games), and while its tenant's key is still one of the server's
keys. Anything else is rejected with a reason the guard answers in a 401 marked
``WWW-Authenticate: Bearer error="invalid_token"``, which makes the SDK exchange its key for
a new token and replay the request once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from tinkex_actors.server.secret_file import read_or_create_secret, replace_secret

__all__ = ["JWT_PREFIX", "SECRET_FILE", "TokenIssuer", "b64url_decode", "b64url_encode"]

SECRET_FILE = "jwt_secret.key"
ISSUER = "tinkex-server"
#: Every JWT starts with the base64url of ``{"``; API keys start with ``tml-``.
JWT_PREFIX = b"eyJ"
_HEADER = {"alg": "HS256", "typ": "JWT"}


def b64url_encode(raw: bytes) -> str:
    """Unpadded base64url (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64url_decode(text: bytes) -> bytes:
    """Decode unpadded base64url.

    Raises:
        ValueError: not base64url.
    """
    try:
        return base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(str(exc)) from None


_HEADER_SEGMENT = b64url_encode(orjson.dumps(_HEADER)).encode("ascii")


class TokenIssuer:
    """Issues and checks the server's JWTs.

    Args:
        data_dir: holds the signing secret (created on first use).
        ttl: token lifetime in seconds.
        accepts_tenant: whether a tenant id still belongs to one of the server's keys.
        clock: Unix time (tests of expiry pass their own).
    """

    def __init__(
        self,
        data_dir: Path,
        ttl: int,
        accepts_tenant: Callable[[str], bool],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret_file = data_dir / SECRET_FILE
        self._secret = read_or_create_secret(self._secret_file)
        self.ttl = ttl
        self._accepts_tenant = accepts_tenant
        self._clock = clock
        #: Tokens issued, and presented ones accepted and rejected (for the test hooks).
        self.issued = 0
        self.accepted = 0
        self.rejected = 0

    def _sign(self, signing_input: bytes) -> bytes:
        return hmac.new(self._secret, signing_input, hashlib.sha256).digest()

    def issue(self, tenant: str) -> str:
        """A fresh token for ``tenant``."""
        now = self._clock()
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": tenant,
            "org_id": tenant,
            "iat": int(now),
            "exp": math.ceil(now + self.ttl),
        }
        signing_input = _HEADER_SEGMENT + b"." + b64url_encode(orjson.dumps(claims)).encode()
        self.issued += 1
        return f"{signing_input.decode('ascii')}.{b64url_encode(self._sign(signing_input))}"

    def verify(self, token: bytes) -> tuple[str | None, str]:
        """``(tenant, "")`` for a valid token, else ``(None, why it was rejected)``.

        The reason never quotes the token.
        """
        tenant, problem = self._check(token)
        if tenant is None:
            self.rejected += 1
        else:
            self.accepted += 1
        return tenant, problem

    def _check(self, token: bytes) -> tuple[str | None, str]:
        parts = token.split(b".")
        if len(parts) != 3:
            return None, "malformed JWT: expected header.payload.signature"
        header, payload, signature = parts
        if header != _HEADER_SEGMENT:
            return None, "JWT not issued by this server (unexpected header)"
        try:
            presented = b64url_decode(signature)
        except ValueError:
            return None, "malformed JWT signature"
        if not hmac.compare_digest(presented, self._sign(header + b"." + payload)):
            return None, "JWT signature does not verify (not issued by this server, or altered)"
        try:
            claims = orjson.loads(b64url_decode(payload))
            tenant, expires = claims["sub"], float(claims["exp"])
        except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            return None, "malformed JWT claims"
        if not isinstance(tenant, str) or claims.get("iss") != ISSUER:
            return None, "malformed JWT claims"
        if self._clock() >= expires:
            return None, "JWT expired; exchange the API key for a new one at /api/v1/auth/token"
        if not self._accepts_tenant(tenant):
            return None, "the API key this JWT was issued for is no longer accepted"
        return tenant, ""

    def rotate(self) -> None:
        """Sign with a new secret (also stored, for later starts): every token issued so
        far is rejected from now on."""
        self._secret = replace_secret(self._secret_file)

    def __repr__(self) -> str:
        return f"TokenIssuer(ttl={self.ttl}, <secret>)"
