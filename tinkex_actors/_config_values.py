"""The checks and displays of :class:`~tinkex_actors.config.Config`'s option values.

Each check takes ``(option name, value)`` and returns the value normalized, or raises
:class:`~tinkex_actors.errors.ConfigError` naming the option (see
:data:`tinkex_actors._config_options.Check`); the option declarations in ``config.py`` name
them. Scalar rules come from :mod:`tinkex_actors._scalar_checks`; what is here is Config's own
(URLs, tags, the headers a config may set, paths). Displays show a set value in ``repr``
without its secret.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping, Sequence

from tinkex_actors import _constants as c
from tinkex_actors import _scalar_checks as sc
from tinkex_actors._config_options import FrozenMap, config_fail
from tinkex_actors._credentials import key_problem
from tinkex_actors._redact import REDACTED, mask_key, redact_url
from tinkex_actors.errors import ConfigError

__all__ = [
    "api_key",
    "base_url",
    "ca_bundle",
    "command",
    "count",
    "flag",
    "header_names",
    "header_text",
    "headers",
    "masked",
    "masked_key",
    "metadata",
    "optional_count",
    "optional_text",
    "proxy",
    "proxy_shown",
    "queue_full",
    "retries",
    "seconds",
    "tags",
]

# Headers the transport sets itself; configure them through their own options instead.
_RESERVED_HEADERS = frozenset(
    h.lower()
    for h in (
        c.HEADER_API_KEY,
        c.HEADER_IDEMPOTENCY_KEY,
        c.HEADER_RETRY_COUNT,
        c.HEADER_READ_TIMEOUT,
        c.HEADER_CF_CLIENT_ID,
        c.HEADER_CF_CLIENT_SECRET,
        "Content-Type",
        "Accept",
        "Content-Length",
        "Transfer-Encoding",
        "Host",
        "Connection",
    )
)
_QUEUE_FULL_CHOICES = ("raise", "wait")


# ------------------------------------------------------------------------------ checks
def seconds(name: str, value: object) -> float:
    """A duration: a finite number of seconds > 0."""
    return sc.check_seconds(value, name, fail=config_fail)


def count(name: str, value: object) -> int:
    """A count or size: an int >= 1."""
    return sc.positive_int(value, name, fail=config_fail)


def optional_count(name: str, value: object) -> int | None:
    """None, or an int >= 1."""
    return None if value is None else count(name, value)


def retries(name: str, value: object) -> int:
    """A retry budget: an int >= 0."""
    return sc.non_negative_int(value, name, fail=config_fail)


def flag(name: str, value: object) -> bool:
    """A bool."""
    return sc.check_bool(value, name, fail=config_fail)


def optional_text(name: str, value: object) -> str | None:
    """None, or a str that is not blank."""
    return None if value is None else sc.check_str(value, name, nonblank=True, fail=config_fail)


def header_text(name: str, value: object) -> str | None:
    """None, or a non-blank str that can travel as a header value."""
    # Never shown in messages: a Cloudflare Access secret is one.
    text = optional_text(name, value)
    return None if text is None else sc.check_header_value(text, name, fail=config_fail)


def api_key(name: str, value: object) -> str | None:
    """None, or a well-formed credential (a ``tml-`` key or a JWT); never quoted."""
    # None is allowed here; Config's cross-option rule asks for a key or a command.
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(name, f"expected a str, got {sc.type_name(value)}")
    problem = key_problem(value)
    if problem is not None:
        raise ConfigError(name, problem)
    return value


def command(name: str, value: object) -> str | None:
    """None, or a non-blank shell command line without NUL characters; never quoted."""
    # Never quoted: a command line may carry a token of its own.
    text = optional_text(name, value)
    if text is not None and "\x00" in text:
        raise ConfigError(name, "must not contain NUL characters")
    return text


def queue_full(name: str, value: object) -> str:
    """``"raise"`` or ``"wait"``."""
    if value not in _QUEUE_FULL_CHOICES or not isinstance(value, str):
        raise ConfigError(name, f"expected 'raise' or 'wait', got {value!r}")
    return value


def base_url(name: str, value: object) -> str:
    """The server URL, normalized: http(s), a host, no credentials, query or fragment."""
    if value is None or value == "":
        return c.DEFAULT_BASE_URL
    if not isinstance(value, str):
        raise ConfigError(name, f"expected a str, got {sc.type_name(value)}")
    url = value.strip().rstrip("/")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(name, f"not a valid URL ({exc}): {redact_url(url)!r}") from None
    del port  # parsed only to validate it
    if parts.scheme not in ("http", "https"):
        raise ConfigError(name, f"scheme must be http or https, got {redact_url(url)!r}")
    if not parts.hostname:
        raise ConfigError(name, f"has no host: {redact_url(url)!r}")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(name, "must not embed credentials (user:password@)")
    if parts.query or parts.fragment:
        raise ConfigError(name, f"must not have a query or fragment: {redact_url(url)!r}")
    return url


def tags(name: str, value: object) -> tuple[str, ...]:
    """Tags as a tuple, deduplicated in order; a str is split on commas."""
    if value is None:
        return ()
    items: list[object]
    if isinstance(value, str):
        items = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(value, Sequence | set | frozenset):
        items = list(value)
    else:
        raise ConfigError(name, f"expected a sequence of str, got {sc.type_name(value)}")
    seen: dict[str, None] = {}
    for i, tag in enumerate(items):
        if not isinstance(tag, str) or not tag.strip():
            raise ConfigError(name, f"tags[{i}] must be a non-empty str, got {tag!r}")
        seen.setdefault(tag, None)
    return tuple(seen)


def metadata(name: str, value: object) -> FrozenMap:
    """A ``str -> str`` mapping, frozen."""
    return FrozenMap({} if value is None else sc.check_str_map(value, name, fail=config_fail))


def headers(name: str, value: object) -> FrozenMap:
    """Extra headers, frozen: valid names, none the transport sets, none twice, safe values."""
    frozen = metadata(name, value)
    seen: set[str] = set()
    for key, item in frozen.items():
        sc.check_header_name(key, name, fail=config_fail)
        lowered = key.lower()
        if lowered in _RESERVED_HEADERS:
            raise ConfigError(name, f"{key!r} is set by the transport; use its own option")
        if lowered in seen:
            raise ConfigError(name, f"{key!r} is given twice (header names ignore case)")
        seen.add(lowered)
        sc.check_header_value(item, name, what=f"the value of {key!r}", fail=config_fail)
    return frozen


def ca_bundle(name: str, value: object) -> str | None:
    """None, or an existing CA file or directory (a str path)."""
    if value is None:
        return None
    if not isinstance(value, str | os.PathLike):
        raise ConfigError(name, f"expected a path, got {sc.type_name(value)}")
    path = os.fspath(value)
    if not isinstance(path, str) or not os.path.exists(path):
        raise ConfigError(name, f"no such file or directory: {path!r}")
    return path


def proxy(name: str, value: object) -> str | None:
    """None, or an http(s) proxy URL with a host."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(name, f"expected a str URL, got {sc.type_name(value)}")
    try:
        parts = urllib.parse.urlsplit(value)
        port = parts.port
    except ValueError:
        raise ConfigError(name, f"not a valid URL: {redact_url(value)!r}") from None
    del port
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            name, f"must be an http:// or https:// URL with a host, got {redact_url(value)!r}"
        )
    return value


# ------------------------------------------------------------------------------ displays
def masked(value: object) -> str:
    """A secret, replaced."""
    return repr(REDACTED)


def masked_key(value: str) -> str:
    """A credential, shown only by its kind (``'tml-***'``)."""
    return repr(mask_key(value))


def header_names(value: Mapping[str, str]) -> str:
    """Header names, with their values replaced."""
    return repr(dict.fromkeys(value, REDACTED))


def proxy_shown(value: str) -> str:
    """A proxy URL without its credentials."""
    return repr(redact_url(value))
