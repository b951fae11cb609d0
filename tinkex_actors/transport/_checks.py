"""Checks on per-call input: every bad argument is a ``ValidationError`` naming it, raised
before anything is sent. Header values are never echoed (they may be secrets).

The rules the transport owns live here (paths, query strings, which headers a call may set,
idempotency tokens); what a number of seconds, a retry count or a header-safe value is comes
from :mod:`tinkex_actors._scalar_checks`, shared with Config and the clients.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from typing import Final

from tinkex_actors import _constants as c
from tinkex_actors._scalar_checks import (
    check_header_name,
    check_header_value,
    check_seconds,
    header_safe,
    non_negative_int,
)
from tinkex_actors.errors import ValidationError

__all__ = [
    "check_body",
    "check_headers",
    "check_iteration",
    "check_media",
    "check_path",
    "check_retries",
    "check_timeout",
    "check_token",
    "encode_query",
    "path_segment",
]

_BODY_TYPES: Final = (bytes, bytearray, memoryview)
_BAD_PATH_CHARS: Final = re.compile(r"[?#\s\x00-\x1f\x7f]")
# What may stay as is in a path: RFC 3986 pchar plus "/" and existing %XX escapes.
_PATH_SAFE: Final = "/:@!$&'()*+,;=-._~%"
# ... in one segment (an id): the same without "/" and "%" (an id is data, not a path).
_SEGMENT_SAFE: Final = ":@!$&'()*+,;=-._~"
# Past this, socket timeouts overflow the platform's time types.
_MAX_TIMEOUT: Final = 1e9
_VISIBLE: Final = re.compile(r"[\x21-\x7e]+")
# A call may not set these: the transport or the HTTP library owns them.
_CALL_FORBIDDEN: Final = frozenset(
    h.lower() for h in (c.HEADER_API_KEY, "Host", "Content-Length", "Transfer-Encoding")
)


def check_body(body: object) -> bytes | None:
    """A request body: bytes (bytes-like objects are copied once), or None."""
    if body is None or isinstance(body, bytes):
        return body
    if isinstance(body, _BODY_TYPES):
        return bytes(body)
    raise ValidationError(
        f"expected bytes (encode it first), got {type(body).__name__}", field="body"
    )


def check_iteration(value: object) -> int:
    """A retrieve_future poll iteration: an int >= 0."""
    return non_negative_int(value, "iteration")


def check_media(value: object, field: str) -> None:
    """A Content-Type / Accept value: a non-empty header-safe str."""
    if not isinstance(value, str) or not value or not header_safe(value):
        raise ValidationError(f"must be a media type str without CR/LF, got {value!r}", field=field)


def check_timeout(value: object) -> float:
    """A per-call read timeout in seconds: a number > 0."""
    return check_seconds(value, "timeout", maximum=_MAX_TIMEOUT)


def check_retries(value: object) -> int:
    """A per-call retry budget: an int >= 0."""
    return non_negative_int(value, "max_retries")


def check_path(path: object) -> str:
    """An endpoint path: starts with one ``/``, no query, fragment, whitespace or control
    character. Other characters a URL path cannot hold (non-ASCII) are percent-encoded as
    UTF-8; existing ``%XX`` escapes are kept.
    """
    if (
        not isinstance(path, str)
        or not path.startswith("/")
        or path.startswith("//")
        or _BAD_PATH_CHARS.search(path) is not None
    ):
        raise ValidationError(
            f"must be an absolute path like '/api/v1/...' without query or fragment, got {path!r}",
            field="path",
        )
    return path if path.isascii() else urllib.parse.quote(path, safe=_PATH_SAFE)


def path_segment(value: str) -> str:
    """``value`` (an id, possibly from the server) quoted for use as one URL path segment.

    Every character that would change the URL's structure (``/``, ``?``, ``#``, ``%``,
    spaces) or that a URL cannot hold is percent-encoded; ids such as ``<session>:train:0``
    keep their colons (the official SDK sends them raw).
    """
    return urllib.parse.quote(value, safe=_SEGMENT_SAFE)


def encode_query(query: object) -> str:
    """Encode query parameters (None values dropped, bools as true/false)."""
    if not isinstance(query, Mapping):
        raise ValidationError(f"expected a mapping, got {type(query).__name__}", field="query")
    pairs: list[tuple[str, str]] = []
    for key, value in query.items():
        if not isinstance(key, str) or not key:
            raise ValidationError(f"keys must be non-empty str, got {key!r}", field="query")
        if value is None:
            continue
        if isinstance(value, bool):
            pairs.append((key, "true" if value else "false"))
        elif isinstance(value, str | int | float):
            pairs.append((key, str(value)))
        else:
            raise ValidationError(
                f"{key!r}: expected str, int, float, bool or None, got {type(value).__name__}",
                field="query",
            )
    return urllib.parse.urlencode(pairs)


def check_headers(headers: object) -> Mapping[str, str]:
    """Validate per-call headers: str names (tokens) and values (no CR/LF), none reserved.

    Raises:
        ValidationError: ``field="headers"`` naming the bad header (never showing its value).
    """
    if not isinstance(headers, Mapping):
        raise ValidationError(
            f"expected a mapping of str to str, got {type(headers).__name__}", field="headers"
        )
    for name, value in headers.items():
        check_header_name(name, "headers")
        if name.lower() in _CALL_FORBIDDEN:
            raise ValidationError(f"{name!r} is set by the transport", field="headers")
        check_header_value(value, "headers", what=f"the value of {name!r}")
    return headers


def check_token(value: object, field: str, *, limit: int = 256) -> str:
    """Validate a caller-supplied header value that must be a short visible-ASCII token."""
    if not isinstance(value, str) or not value or len(value) > limit:
        raise ValidationError(f"must be a non-empty str of at most {limit} characters", field=field)
    if not _VISIBLE.fullmatch(value):
        raise ValidationError("must hold only visible ASCII (no spaces)", field=field)
    return value
