"""Where credentials come from: key formats, the stored key file, the credential command, JWTs.

Sources, in the order :meth:`Config.new <tinkex_actors.config.Config.new>` consults them (the
official SDK's order, protocol §1.1):

1. the ``api_key=`` argument;
2. the ``TINKER_API_KEY`` environment variable;
3. the ``TINKER_CREDENTIAL_CMD`` environment variable (or ``credential_cmd=``): a shell command
   that prints a credential. It is a *source*, never frozen into the Config: it runs whenever a
   fresh credential is needed (the first request, each JWT exchange, after a rejection);
4. the default key of the stored key file ``$HOME/.tinker/credentials.json`` (written by
   ``tinker auth login``), only when no credential command is configured.

A credential is a static key (``tml-...``) or a JWT (``eyJ...``). Nothing here logs, shows or
raises with a credential's text: errors say which source failed and how, never what it held.
JWT claims are read without verifying the signature (the token came from the server itself,
over the connection the client trusts).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import orjson

from tinkex_actors import _constants as c
from tinkex_actors.errors import ConfigError

__all__ = [
    "JwtTimes",
    "Origin",
    "default_credentials_path",
    "is_jwt",
    "jwt_times",
    "key_problem",
    "read_stored_key",
    "run_credential_cmd",
]

_VISIBLE_ASCII: Final = re.compile(r"[\x21-\x7e]+")
_JWT_SHAPE: Final = re.compile(r"eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*")


# ---------------------------------------------------------------------------- origins
class Origin:
    """Where a Config's key or credential command came from (no secret in it).

    ``kind`` is ``"given"`` (an argument, or an ``env=`` mapping passed to ``Config.new``),
    ``"env"`` (this process's environment variable ``detail``) or ``"file"`` (the stored key
    file at path ``detail``). A pickled sampling client carries the origin instead of the
    secret where it can: another process reads the same variable or file.
    """

    __slots__ = ("detail", "kind")

    def __init__(self, kind: str, detail: str) -> None:
        self.kind = kind
        self.detail = detail

    def describe(self) -> str:
        """A short human description: ``TINKER_API_KEY``, ``the stored key file '...'``..."""
        if self.kind == "file":
            return f"the stored key file {self.detail!r}"
        return self.detail

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Origin):
            return NotImplemented
        return (self.kind, self.detail) == (other.kind, other.detail)

    def __hash__(self) -> int:
        return hash((self.kind, self.detail))

    def __repr__(self) -> str:
        return f"Origin({self.kind!r}, {self.detail!r})"


# ---------------------------------------------------------------------------- key formats
def key_problem(value: str) -> str | None:
    """What is wrong with ``value`` as a credential, or None when it is well-formed.

    The answer never quotes the value (it may be a real key with a typo).
    """
    if not value.startswith((c.API_KEY_PREFIX, c.JWT_PREFIX)):
        return (
            f"must start with {c.API_KEY_PREFIX!r} or be a JWT ({c.JWT_PREFIX!r}...); "
            f"got a str of length {len(value)} that does not"
        )
    if len(value) <= len(c.API_KEY_PREFIX) or not _VISIBLE_ASCII.fullmatch(value):
        return "must be non-empty after its prefix and hold only visible ASCII"
    return None


def is_jwt(value: str) -> bool:
    """Whether ``value`` has the shape of a compact JWT (``eyJ<header>.<payload>.<sig>``)."""
    return _JWT_SHAPE.fullmatch(value) is not None


class JwtTimes:
    """The ``exp`` and ``iat`` claims of a JWT (POSIX seconds; ``iat`` may be missing)."""

    __slots__ = ("exp", "iat")

    def __init__(self, exp: float, iat: float | None) -> None:
        self.exp = exp
        self.iat = iat

    @property
    def lifetime(self) -> float | None:
        """``exp - iat`` when both are known and ordered, else None."""
        if self.iat is None or self.exp <= self.iat:
            return None
        return self.exp - self.iat

    def remaining(self, now: float) -> float:
        """Seconds left at POSIX time ``now``, trusting the server's claims over this clock.

        When the local clock disagrees with the token's own lifetime (the token would be
        expired already, or would live longer than it was issued for), the clocks are skewed
        and the lifetime wins, as a token is only ever read right after it was received.
        """
        left = self.exp - now
        lifetime = self.lifetime
        if lifetime is not None and (left <= 0 or left > lifetime):
            return lifetime
        return left


def jwt_times(token: str) -> JwtTimes | None:
    """The ``exp``/``iat`` claims of ``token`` (unverified), or None when it has no numeric
    ``exp`` or is not a readable JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        return None
    if not isinstance(claims, dict):
        return None
    exp, iat = claims.get("exp"), claims.get("iat")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    if isinstance(iat, bool) or not isinstance(iat, int | float):
        iat = None
    return JwtTimes(float(exp), None if iat is None else float(iat))


# ---------------------------------------------------------------------------- stored key file
def default_credentials_path(env: Mapping[str, str] | None = None) -> Path | None:
    """``$HOME/.tinker/credentials.json``, with ``HOME`` from ``env`` (default: the process's
    home directory). None when ``env`` is given without a ``HOME``."""
    if env is None:
        return Path.home() / c.CREDENTIALS_FILE
    home = env.get(c.ENV_HOME, "").strip()
    return Path(home) / c.CREDENTIALS_FILE if home else None


def read_stored_key(path: Path) -> str | None:
    """The default key of the stored key file at ``path``, or None when there is no file or
    it names no default (or a default it does not hold).

    Raises:
        ConfigError: (``api_key``) the file is unreadable or not a credentials file, or its
            default key is malformed. The message names the file, never its contents.
    """
    where = f"the stored key file {str(path)!r}"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError("api_key", f"{where} cannot be read ({exc.strerror})") from None
    try:
        data: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ConfigError("api_key", f"{where} is not valid JSON") from None
    if not isinstance(data, dict):
        raise ConfigError("api_key", f"{where} does not hold a JSON object")
    version = data.get("version", c.CREDENTIALS_FILE_VERSION)
    if version != c.CREDENTIALS_FILE_VERSION:
        raise ConfigError(
            "api_key",
            f"{where} has version {version!r}; only version {c.CREDENTIALS_FILE_VERSION} "
            "is understood",
        )
    keys = data.get("keys", {})
    default = data.get("default")
    if not isinstance(keys, dict) or not (default is None or isinstance(default, str)):
        raise ConfigError("api_key", f"{where}: 'keys' must be an object, 'default' a name")
    if default is None or default not in keys:
        return None
    record = keys[default]
    key = record.get("key") if isinstance(record, dict) else None
    if not isinstance(key, str):
        raise ConfigError("api_key", f"{where}: the default key {default!r} has no 'key' string")
    problem = key_problem(key)
    if problem is not None:
        raise ConfigError("api_key", f"{where}: the default key {default!r} {problem}")
    return key


# ---------------------------------------------------------------------------- credential command
def run_credential_cmd(
    command: str, *, origin: str, timeout: float = c.CREDENTIAL_CMD_TIMEOUT
) -> str:
    """Run the credential command and return the credential it printed (stripped).

    The command runs through the shell, with this process's environment, no standard input,
    and its standard error discarded (it may hold secrets); only its standard output is read,
    and never logged.

    Args:
        command: the shell command.
        origin: where the command came from (``"TINKER_CREDENTIAL_CMD"``, ...), for errors.
        timeout: seconds before the command (and everything it started) is killed.

    Raises:
        ConfigError: (``credential_cmd``) the command could not start, failed, timed out,
            printed nothing, printed something that is not a ``tml-`` key or a JWT, or
            printed a JWT that has already expired. The message never quotes the output.
    """
    where = f"the credential command (from {origin})"
    try:
        process = subprocess.Popen(
            command,
            shell=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a timeout kills its whole process group
        )
    except OSError as exc:
        raise ConfigError(
            "credential_cmd", f"{where} could not be started ({exc.strerror})"
        ) from None
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        raise ConfigError(
            "credential_cmd", f"{where} did not finish within {timeout:g} s"
        ) from None
    except BaseException:
        _kill_group(process)
        raise
    if process.returncode != 0:
        raise ConfigError(
            "credential_cmd",
            f"{where} failed with exit status {process.returncode} (its standard error is "
            "not shown, as it may hold secrets: run the command by hand to see it)",
        )
    if len(output) > c.CREDENTIAL_CMD_MAX_OUTPUT:
        raise ConfigError(
            "credential_cmd",
            f"{where} printed {len(output)} bytes; a credential is one line",
        )
    credential = output.decode("utf-8", "replace").strip()
    if not credential:
        raise ConfigError("credential_cmd", f"{where} printed nothing")
    problem = key_problem(credential)
    if problem is not None:
        raise ConfigError("credential_cmd", f"{where} printed a credential that {problem}")
    if credential.startswith(c.JWT_PREFIX):
        times = jwt_times(credential)
        if times is not None and times.exp <= time.time():
            raise ConfigError("credential_cmd", f"{where} printed a JWT that has expired")
    return credential


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    # The shell may have started children that hold the output pipe open: kill them all.
    with contextlib.suppress(OSError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        process.kill()
    with contextlib.suppress(Exception):
        process.communicate(timeout=5.0)
