"""Session lifecycle on the wire: bootstrap, heartbeat, finish (protocol §2, §3.1, §3.2).

* :func:`bootstrap` runs once per ServiceClient, in the constructing thread: the mandatory
  ``client/config`` (its flags and chunk limits), the JWT exchange when it announces
  ``pjwt_auth_enabled`` (:func:`authenticate`), the optional ``client/dynamic_config``
  (404 means defaults), and ``create_session``.
* :func:`authenticate` switches the tenant's transport to JWTs (protocol §1.2): the first
  ``POST auth/token`` happens here, so a refused credential fails the construction; later
  ones happen when the JWT is due (see :mod:`tinkex_actors.transport._auth`).
* :class:`Heartbeat` is one daemon thread per ServiceClient, *not* an actor, so a busy
  mailbox can never delay it: every ``heartbeat_interval`` seconds it POSTs
  ``session_heartbeat`` (no retries, 10 s timeout), warns once a success is older than 120 s
  and never raises. When the server says the session is gone (410, or a 404 naming the
  session: a server that lost its data) it reports that to its ``on_gone`` callback (the
  recovery actor; the callback only enqueues) and pauses until :meth:`Heartbeat.rebind`
  names the new session; without a callback it stops.
* :func:`open_session` creates a further session (session recovery).
* :func:`finish_session` ends the session at ``close()`` (404 and 410 are fine).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Final

import attrs
import orjson

from tinkex_actors import _constants as c
from tinkex_actors import _endpoints as ep
from tinkex_actors._credentials import is_jwt
from tinkex_actors._logging import get_logger
from tinkex_actors.config import Config
from tinkex_actors.errors import APIStatusError, GoneError, NotFoundError, ResponseDecodeError
from tinkex_actors.transport import HTTPTransport
from tinkex_actors.types import (
    ClientConfigRequest,
    ClientConfigResponse,
    ClientDynamicConfigResponse,
    CreateSessionRequest,
    CreateSessionResponse,
    SessionFinishRequest,
)
from tinkex_actors.wire import decode_json, encode_json

__all__ = [
    "Heartbeat",
    "SessionInfo",
    "attach_session",
    "authenticate",
    "bootstrap",
    "exchange_jwt",
    "finish_session",
    "open_session",
    "session_gone_answer",
]

_CONFIG_PATH: Final = ep.CLIENT_CONFIG.path()
_DYNAMIC_PATH: Final = ep.DYNAMIC_CONFIG.path()
_SESSION_PATH: Final = ep.CREATE_SESSION.path()
_HEARTBEAT_PATH: Final = ep.SESSION_HEARTBEAT.path()
_AUTH_TOKEN_PATH: Final = ep.AUTH_TOKEN.path()


@attrs.frozen
class SessionInfo:
    """What bootstrap learned: the session id and the server's announcements."""

    session_id: str
    announced: ClientConfigResponse
    dynamic: ClientDynamicConfigResponse


def bootstrap(transport: HTTPTransport, config: Config) -> SessionInfo:
    """``client/config``, ``client/dynamic_config``, ``create_session``.

    Raises:
        APIError: client/config or create_session failed (after the transport's retries), or
            dynamic_config failed with anything but 404.
    """
    request = encode_json(ClientConfigRequest())
    announced = decode_json(
        ClientConfigResponse, transport.request("POST", _CONFIG_PATH, body=request).content
    )
    authenticate(transport, announced)
    try:
        reply = transport.request(
            "POST", _DYNAMIC_PATH, body=request, timeout=c.DYNAMIC_CONFIG_TIMEOUT
        )
        dynamic = decode_json(ClientDynamicConfigResponse, reply.content)
    except NotFoundError:
        dynamic = ClientDynamicConfigResponse()
    session_request = CreateSessionRequest(
        tags=list(config.tags),
        user_metadata=dict(config.user_metadata),
        project_id=config.project_id,
    )
    created = decode_json(
        CreateSessionResponse,
        transport.request("POST", _SESSION_PATH, body=encode_json(session_request)).content,
    )
    log = get_logger("session")
    for level, message in (
        ("info", created.info_message),
        ("warning", created.warning_message),
        ("error", created.error_message),
    ):
        if message:
            getattr(log, level)(
                "tinkex.session.server_message", session_id=created.session_id, message=message
            )
    return SessionInfo(created.session_id, announced, dynamic)


def authenticate(transport: HTTPTransport, announced: ClientConfigResponse) -> None:
    """Use JWTs when ``announced`` (the server's ``client/config``) says so, and obtain the
    first one now; otherwise keep (or go back to) the plain credential.

    Raises:
        APIError: the exchange failed (``AuthenticationError``: the credential was refused).
        ConfigError: the credential command had to run and failed, or the server asks for
            one (``credential_default_source``) and none is configured.
    """
    auth = transport.auth
    if not announced.pjwt_auth_enabled:
        auth.use_plain()
        return
    use_cmd = announced.credential_default_source == "credential_cmd"
    auth.use_jwt(functools.partial(exchange_jwt, transport), use_cmd=use_cmd)
    auth.token()


def attach_session(
    transport: HTTPTransport, session_id: str, announced: ClientConfigResponse
) -> None:
    """The bootstrap of a restored sampling client's tree (protocol §2, a "shadow holder"):
    no ``client/config`` (``announced`` came with the handle) and no ``create_session``, only
    the JWT exchange when announced and one heartbeat, which proves the session is alive.

    Raises:
        NotFoundError: the server does not know the session (another server, another key).
        GoneError: the session ended.
        APIError / ConfigError: as :func:`authenticate`, or the heartbeat failed.
    """
    authenticate(transport, announced)
    transport.request(
        "POST",
        _HEARTBEAT_PATH,
        body=orjson.dumps({"session_id": session_id, "type": "session_heartbeat"}),
        timeout=c.HEARTBEAT_TIMEOUT,
    )


def exchange_jwt(transport: HTTPTransport, credential: str) -> str:
    """``POST auth/token`` (body ``{}``) sent with the raw ``credential``; returns the JWT.

    Raises:
        APIError: the exchange failed; ``ResponseDecodeError`` when the answer holds no JWT
            (the body is not quoted: it may hold a token).
    """
    reply = transport.request("POST", _AUTH_TOKEN_PATH, body=b"{}", credential=credential)
    try:
        data = reply.json()
    except ResponseDecodeError:
        data = None  # reported below without quoting the body
    jwt = data.get("jwt") if isinstance(data, dict) else None
    if not isinstance(jwt, str) or not is_jwt(jwt):
        raise ResponseDecodeError(
            f"POST {_AUTH_TOKEN_PATH}: the answer holds no JWT",
            body=None,
            expected='{"jwt": "<header>.<payload>.<signature>"}',
            method="POST",
            path=_AUTH_TOKEN_PATH,
        )
    return jwt


def session_gone_answer(exc: APIStatusError, session_id: str) -> bool:
    """Whether an answer to a request naming ``session_id`` says that session is gone: a 410,
    or a 404 whose body names the session (a 404 without it, e.g. a server lacking the
    endpoint, says nothing about the session)."""
    if isinstance(exc, GoneError):
        return True
    return isinstance(exc, NotFoundError) and session_id in exc.body


def open_session(transport: HTTPTransport, config: Config) -> str:
    """``create_session`` with the Config's tags, metadata and project; returns its id.

    Raises:
        APIError: create_session failed (after the transport's retries).
    """
    session_request = CreateSessionRequest(
        tags=list(config.tags),
        user_metadata=dict(config.user_metadata),
        project_id=config.project_id,
    )
    reply = transport.request("POST", _SESSION_PATH, body=encode_json(session_request))
    return decode_json(CreateSessionResponse, reply.content).session_id


def finish_session(transport: HTTPTransport, session_id: str, budget: float) -> None:
    """``POST sessions/{id}/finish`` within about ``budget`` seconds; failures are logged.

    The read timeout is ``SESSION_FINISH_TIMEOUT`` or what is left of the budget; a retry is
    allowed only when the budget holds two full attempts.
    """
    timeout = max(min(c.SESSION_FINISH_TIMEOUT, budget), c.POLL_MIN_TIMEOUT)
    retries = c.SESSION_FINISH_RETRIES if budget >= 2 * c.SESSION_FINISH_TIMEOUT else 0
    try:
        transport.request(
            "POST",
            ep.FINISH_SESSION.path(session_id=session_id),
            body=encode_json(SessionFinishRequest()),
            timeout=timeout,
            max_retries=retries,
        )
    except (NotFoundError, GoneError):
        pass  # an old server, or the session already ended
    except Exception as exc:  # close() must finish: a failed goodbye is only logged
        get_logger("session").warning(
            "tinkex.session.finish_failed",
            session_id=session_id,
            error=type(exc).__name__,
            reason=str(exc)[:200],
        )


class Heartbeat:
    """Keeps one ServiceClient's session alive from its own daemon thread.

    Args:
        transport: the tenant's transport.
        session_id: the session.
        interval: seconds between heartbeats (the first one after ``interval``).
        on_gone: called (from the heartbeat thread) with the session id and the server's
            answer when the server says the session is gone; must not block. The heartbeat
            then pauses until :meth:`rebind`. None: the heartbeat stops instead.
    """

    def __init__(
        self,
        transport: HTTPTransport,
        session_id: str,
        interval: float,
        on_gone: Callable[[str, APIStatusError], None] | None = None,
    ) -> None:
        self._transport = transport
        self._interval = interval
        self._on_gone = on_gone
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._session_id = session_id
        self._body = self._encode(session_id)
        #: The session the server said is gone (no beats until rebind() names another).
        self._gone: str | None = None
        self.last_success = time.monotonic()
        self.beats = 0
        self.failures = 0
        self._warned_at = -float("inf")
        self.thread = threading.Thread(
            target=self._run, name=f"tinkex-heartbeat-{session_id[-16:]}", daemon=True
        )

    @staticmethod
    def _encode(session_id: str) -> bytes:
        return orjson.dumps({"session_id": session_id, "type": "session_heartbeat"})

    @property
    def session_id(self) -> str:
        """The session being kept alive."""
        return self._session_id

    def start(self) -> None:
        """Start the thread."""
        self.thread.start()

    def stop(self) -> None:
        """Ask the thread to stop (it exits after an HTTP call in flight, at most 10 s)."""
        self._stop.set()

    def rebind(self, session_id: str) -> None:
        """Keep ``session_id`` alive from now on (the session was replaced)."""
        with self._lock:
            self._session_id = session_id
            self._body = self._encode(session_id)
            self._gone = None
            self.last_success = time.monotonic()

    @property
    def running(self) -> bool:
        """Whether the thread is alive."""
        return self.thread.is_alive()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                if not self.beat():
                    return
            except Exception as exc:  # the heartbeat never dies of an unexpected error
                get_logger("session").error(
                    "tinkex.session.heartbeat_error",
                    session_id=self._session_id,
                    error=type(exc).__name__,
                    reason=str(exc)[:200],
                )

    def beat(self) -> bool:
        """Send one heartbeat; returns False when the loop should stop (session gone, no
        ``on_gone``)."""
        with self._lock:
            session_id, body, gone = self._session_id, self._body, self._gone
        if gone == session_id:
            return True  # paused: the recovery is replacing the session
        try:
            self._transport.request(
                "POST",
                _HEARTBEAT_PATH,
                body=body,
                timeout=c.HEARTBEAT_TIMEOUT,
                max_retries=0,
            )
        except (GoneError, NotFoundError) as exc:
            if session_gone_answer(exc, session_id):
                return self._session_gone(session_id, exc)
            return self._failed(session_id, exc)
        except Exception as exc:  # every failure: counted, warned about after a while
            return self._failed(session_id, exc)
        self.beats += 1
        self.last_success = time.monotonic()
        return True

    def _session_gone(self, session_id: str, exc: APIStatusError) -> bool:
        get_logger("session").warning(
            "tinkex.session.heartbeat_gone",
            session_id=session_id,
            status=exc.status_code,
            reason=exc.body[:200],
        )
        if self._on_gone is None:
            return False
        with self._lock:
            if session_id != self._session_id:
                return True  # rebound meanwhile: the next beat is for the new session
            self._gone = session_id
        self._on_gone(session_id, exc)
        return True

    def _failed(self, session_id: str, exc: Exception) -> bool:
        if self._stop.is_set():
            return False
        self.failures += 1
        now = time.monotonic()
        silent = now - self.last_success
        if silent >= c.HEARTBEAT_WARN_AFTER and now - self._warned_at >= c.HEARTBEAT_WARN_AFTER:
            self._warned_at = now
            get_logger("session").warning(
                "tinkex.session.heartbeat_failing",
                session_id=session_id,
                seconds_without_success=round(silent, 1),
                error=type(exc).__name__,
            )
        return True
