"""Request headers (protocol §1.3) and origins.

A tenant's constant headers (a static API key, User-Agent, Cloudflare Access,
``default_headers``) are built once per transport; a call copies them and adds its own. A
credential that changes (a JWT, a credential command's output) is not among them: the
transport asks its :class:`~tinkex_actors.transport._auth.Auth` for it per request. Credentials
go only to the base URL's origin: :func:`origin` decides what counts as the same server.
"""

from __future__ import annotations

import random
import urllib.parse

from requests.utils import DEFAULT_ACCEPT_ENCODING

from tinkex_actors import _constants as c
from tinkex_actors._version import __version__
from tinkex_actors.config import Config

__all__ = [
    "METHODS",
    "USER_AGENT",
    "merge_header",
    "new_idempotency_key",
    "origin",
    "tenant_headers",
]

USER_AGENT = f"{c.USER_AGENT_PRODUCT}/{__version__}"
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of an absolute URL, lower-case, with the default port filled.

    Raises:
        ValueError: the URL has no scheme or host, or a bad port.
    """
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host:
        raise ValueError("not an absolute http(s) URL")
    return (scheme, host, parts.port or _DEFAULT_PORTS[scheme])


def merge_header(headers: dict[str, str], name: str, value: str) -> None:
    """Set ``name`` in ``headers``, replacing any entry whose name differs only in case."""
    lower = name.lower()
    for existing in [k for k in headers if k.lower() == lower and k != name]:
        del headers[existing]
    headers[name] = value


def tenant_headers(config: Config) -> dict[str, str]:
    """The constant headers sent with every request to ``config.base_url``'s origin (the API
    key included when the Config has one; a credential command's output is added per
    request)."""
    headers: dict[str, str] = {}
    if config.api_key is not None:
        headers[c.HEADER_API_KEY] = config.api_key
    headers["User-Agent"] = USER_AGENT
    # What urllib3 can decode here (gzip, deflate; zstd and br when installed).
    headers["Accept-Encoding"] = DEFAULT_ACCEPT_ENCODING
    if config.cf_access_client_id is not None and config.cf_access_client_secret is not None:
        headers[c.HEADER_CF_CLIENT_ID] = config.cf_access_client_id
        headers[c.HEADER_CF_CLIENT_SECRET] = config.cf_access_client_secret
    for name, value in config.default_headers.items():
        merge_header(headers, name, value)
    return headers


def new_idempotency_key() -> str:
    """A fresh idempotency key: one per call, reused by that call's retries."""
    # 128 random bits from the process's Mersenne Twister (seeded from the OS, re-seeded in
    # forked children): keys need uniqueness, not secrecy, and os.urandom is a syscall that
    # releases the GIL, which costs a contended re-acquire on every call under fan-out.
    return f"{c.IDEMPOTENCY_KEY_PREFIX}{random.getrandbits(128):032x}"
