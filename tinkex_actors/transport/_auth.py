"""``Auth``: the credential a transport sends to its base origin, read once per request.

Three modes (protocol §1.2):

* **static**: the Config's API key, part of the transport's constant headers. The transport
  does not even ask (``dynamic`` is False): the hot path is what it was before credentials
  could change.
* **command**: no API key, only a credential command: its output is the credential. Kept until
  it is due (a ``tml-`` key: until the server rejects it; a JWT: shortly before its ``exp``),
  then the command runs again.
* **jwt**: the server announced ``pjwt_auth_enabled``: the raw credential (the key, or the
  command's output when the server names ``credential_default_source == "credential_cmd"``,
  or when there is no key) is exchanged for a short-lived JWT at ``POST /api/v1/auth/token``;
  every request to the base origin carries the JWT. It is renewed when less than
  ``min(60 s, half its lifetime)`` remains.

Reading the current credential (:meth:`Auth.token`) takes no lock: one tuple read and one
clock read. Renewal happens in one thread at a time; while one thread renews, the others keep
sending the current credential as long as it has not expired (only once it has do they wait).
A renewal that fails while the current JWT is still valid is logged and retried later; once
it has expired, the failure goes to the request.

A request answered ``401`` that says the credential itself was rejected (``WWW-Authenticate:
... error="invalid_token"``; in command mode any 401) is sent once more with a fresh credential
(:meth:`Auth.renew`); a second 401 goes to the caller. The JWT exchange itself is sent with
the raw credential and never replayed.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Final, NamedTuple

from tinkex_actors import _constants as c
from tinkex_actors._credentials import is_jwt, jwt_times, run_credential_cmd
from tinkex_actors._logging import get_logger
from tinkex_actors._redact import scrub
from tinkex_actors.config import Config
from tinkex_actors.errors import ConfigError, TinkexError, TinkexTimeoutError

__all__ = ["Auth", "Exchange"]

#: ``exchange(raw_credential) -> jwt``: the JWT exchange (``POST auth/token``), supplied by
#: the session bootstrap once the server announced JWT auth.
Exchange = Callable[[str], str]

_STATIC: Final = "static"
_COMMAND: Final = "command"
_JWT: Final = "jwt"
# How many recent credentials are remembered to scrub them out of error texts.
_REMEMBERED: Final = 4


class _Token(NamedTuple):
    """A credential and when (``time.monotonic()``) to renew it and when it stops working."""

    value: str
    refresh_at: float
    expires_at: float


_NONE: Final = _Token("", -math.inf, -math.inf)


def _lasting(value: str, now: float) -> _Token:
    """The token of a freshly obtained credential: JWTs are due before their ``exp``."""
    times = jwt_times(value) if value.startswith(c.JWT_PREFIX) else None
    if times is None:
        return _Token(value, math.inf, math.inf)
    remaining = max(0.0, times.remaining(time.time()))
    span = times.lifetime or remaining
    margin = min(c.JWT_REFRESH_MARGIN, span / 2.0)
    return _Token(value, now + remaining - margin, now + remaining)


class Auth:
    """The credential of one transport (see the module docstring). Thread-safe.

    Args:
        config: the tenant (its ``api_key``, ``credential_cmd`` and their origins).
        wait: longest wait for another thread's renewal when the current credential expired.
    """

    def __init__(self, config: Config, *, wait: float | None = None) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._wait = wait if wait is not None else c.CREDENTIAL_CMD_TIMEOUT + config.timeout
        self._exchange: Exchange | None = None
        self._use_cmd = False
        # Replaced, never mutated: secrets() reads it from any thread without a lock.
        self._recent: tuple[str, ...] = ()
        self.renewals = 0
        if config.api_key is not None:
            self._mode = _STATIC
            self._current = _Token(config.api_key, math.inf, math.inf)
        else:
            self._mode = _COMMAND
            self._current = _NONE
        #: Whether the transport must ask for the credential per request (False: the static
        #: key in the constant headers is the credential).
        self.dynamic = self._mode != _STATIC

    # ------------------------------------------------------------------ modes
    @property
    def mode(self) -> str:
        """``"static"``, ``"command"`` or ``"jwt"``."""
        return self._mode

    def use_jwt(self, exchange: Exchange, *, use_cmd: bool) -> bool:
        """Switch to JWTs obtained through ``exchange`` (idempotent). ``use_cmd``: the server
        wants the credential command's output exchanged rather than the key. Returns True
        when this call switched (False: already in JWT mode with the same source)."""
        with self._lock:
            if self._mode == _JWT and self._use_cmd == use_cmd:
                return False
            self._exchange = exchange
            self._use_cmd = use_cmd
            self._mode = _JWT
            # Expired first, then dynamic: a reader that sees dynamic also sees no token
            # and obtains one.
            self._current = _NONE
            self.dynamic = True
            return True

    def use_plain(self) -> None:
        """Leave JWT mode (the server no longer announces it): the key, else the command."""
        with self._lock:
            if self._mode != _JWT:
                return
            self._exchange = None
            if self._config.api_key is not None:
                self._mode = _STATIC
                self._current = _Token(self._config.api_key, math.inf, math.inf)
                self.dynamic = False
            else:
                self._mode = _COMMAND
                self._current = _NONE

    # ------------------------------------------------------------------ reading
    def token(self) -> str:
        """The credential to send now. Lock-free unless it is due for renewal.

        Raises:
            ConfigError: the credential command failed (when it had to run).
            APIError: the JWT exchange failed and there is no valid JWT to fall back on.
            TinkexTimeoutError: another thread's renewal took too long.
        """
        current = self._current
        if time.monotonic() < current.refresh_at:
            return current.value
        return self._refresh(current)

    def _refresh(self, seen: _Token) -> str:
        usable = time.monotonic() < seen.expires_at
        if usable:
            if not self._lock.acquire(blocking=False):
                return seen.value  # another thread renews; this one is still good
        elif not self._lock.acquire(timeout=self._wait):
            raise TinkexTimeoutError(
                f"waited {self._wait:g} s for another thread to renew the credential"
            )
        try:
            current = self._current
            now = time.monotonic()
            if now < current.refresh_at:
                return current.value  # renewed meanwhile
            try:
                fresh = self._obtain()
            except TinkexError as exc:
                if now < current.expires_at:
                    return self._postpone(current, exc)
                raise
            self._current = fresh
            return fresh.value
        finally:
            self._lock.release()

    def _postpone(self, current: _Token, exc: TinkexError) -> str:
        # Called with the lock held: keep the valid token, try again a little later.
        now = time.monotonic()
        delay = min(c.JWT_REFRESH_RETRY, max(0.0, current.expires_at - now) / 2.0)
        self._current = current._replace(refresh_at=now + delay)
        get_logger("auth").warning(
            "tinkex.auth.renew_failed",
            mode=self._mode,
            error=type(exc).__name__,
            reason=scrub(str(exc), self.secrets())[:300],
            retry_in_s=round(delay, 3),
            tenant_id=self._config.tenant_id,
        )
        return current.value

    def renew(self, rejected: str) -> str:
        """A credential other than ``rejected`` (the server refused it): the current one if
        another thread already replaced it, else a freshly obtained one.

        Raises:
            ConfigError / APIError / TinkexTimeoutError: as :meth:`token`.
        """
        if not self._lock.acquire(timeout=self._wait):
            raise TinkexTimeoutError(
                f"waited {self._wait:g} s for another thread to renew the credential"
            )
        try:
            current = self._current
            if current.value and current.value != rejected:
                return current.value
            fresh = self._obtain()
            self._current = fresh
            return fresh.value
        finally:
            self._lock.release()

    def should_renew(self, status: int, headers: Mapping[str, str]) -> bool:
        """Whether an answer says the credential itself was refused and a fresh one may work:
        a 401 with ``error="invalid_token"`` for JWTs, any 401 for a command's output."""
        if status != 401 or not self.dynamic:
            return False
        if self._mode == _COMMAND:
            return True
        return c.JWT_INVALID_TOKEN in headers.get(c.HEADER_WWW_AUTHENTICATE, "")

    def secrets(self) -> tuple[str, ...]:
        """Recent credentials obtained here, to scrub from texts shown to people."""
        return self._recent

    # ------------------------------------------------------------------ obtaining
    def _obtain(self) -> _Token:
        # Called with the lock held, from one thread at a time.
        if self._mode == _JWT:
            exchange = self._exchange
            assert exchange is not None
            raw = self._raw_credential()
            value = exchange(raw)
            kind = "jwt"
        else:
            value = self._run_command()
            kind = "command"
        self._remember(value)
        token = _lasting(value, time.monotonic())
        self.renewals += 1
        get_logger("auth").debug(
            "tinkex.auth.renewed",
            kind=kind,
            valid_for_s=None
            if math.isinf(token.expires_at)
            else round(token.expires_at - time.monotonic(), 3),
            tenant_id=self._config.tenant_id,
        )
        return token

    def _raw_credential(self) -> str:
        # What is exchanged for a JWT (the official SDK's choice, protocol §1.2).
        key = self._config.api_key
        if key is not None and is_jwt(key):
            return key  # already a dynamic credential: used as it is
        if self._use_cmd:
            if self._config.credential_cmd is None:
                raise ConfigError(
                    "credential_cmd",
                    "the server asks for credentials from a credential command "
                    "(client/config credential_default_source='credential_cmd'), but none is "
                    f"configured: set {c.ENV_CREDENTIAL_CMD} or pass credential_cmd=",
                )
            return self._run_command()
        if key is not None:
            return key
        return self._run_command()

    def _run_command(self) -> str:
        command = self._config.credential_cmd
        origin = self._config.credential_cmd_origin
        if command is None:
            raise ConfigError("credential_cmd", "no credential command is configured")
        value = run_credential_cmd(
            command, origin=origin.describe() if origin is not None else "credential_cmd"
        )
        self._remember(value)
        return value

    def _remember(self, value: str) -> None:
        if value not in self._recent:
            self._recent = (*self._recent[-(_REMEMBERED - 1) :], value)

    def __repr__(self) -> str:
        return f"Auth(mode={self._mode!r}, tenant_id={self._config.tenant_id!r})"
