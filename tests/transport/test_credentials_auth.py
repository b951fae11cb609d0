"""The transport's per-request credential: JWT exchange, renewal, replay, credential commands.

A scripted local server plays the JWT side of protocol §1.2 so the timing and the faults can be
chosen (renewals under concurrency, a renewal that fails, a token the server stops accepting,
a credential that is refused twice). The embedded server's real JWT auth is exercised end to
end in ``tests/server/test_jwt_sdk.py``.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import structlog
from test_credentials import make_jwt

from tinkex_actors._logging import LOGGER_NAME
from tinkex_actors.actors._session import authenticate
from tinkex_actors.config import Config
from tinkex_actors.errors import (
    AuthenticationError,
    ConfigError,
    InternalServerError,
    ResponseDecodeError,
    TinkexError,
)
from tinkex_actors.testing import SleepRecorder
from tinkex_actors.transport import HTTPTransport, RequestsBackend
from tinkex_actors.types import ClientConfigResponse

from ._server import Answer, LocalServer, Seen, echo

KEY = "tml-auth-test-" + secrets.token_hex(8)
JWT_ON = ClientConfigResponse(pjwt_auth_enabled=True)
INVALID = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


class JwtServer:
    """Issues JWTs for ``KEY`` at auth/token and accepts only live ones elsewhere."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.lock = threading.Lock()
        self.valid: set[str] = set()
        self.issued: list[str] = []
        self.exchanging = 0
        self.most_exchanging = 0
        self.rejected = 0
        self.exchange_fails = False
        self.refuse_all = False
        self.accepted_keys = {KEY}

    def revoke(self) -> None:
        with self.lock:
            self.valid.clear()

    def route(self, seen: Seen) -> Answer:
        presented = seen.headers.get("x-api-key", "")
        if seen.target.endswith("/auth/token"):
            return self._exchange(presented)
        with self.lock:
            ok = presented in self.valid and not self.refuse_all
            if ok:
                exp = orjson.loads(_claims(presented))["exp"]
                ok = exp > time.time()
            if not ok:
                self.rejected += 1
        if ok:
            return echo(seen)
        # Echo what was presented: a careless server; the client must not show it.
        return Answer(401, f"bad token {presented}".encode(), {**INVALID, "X-Echo": presented})

    def _exchange(self, presented: str) -> Answer:
        if presented not in self.accepted_keys:
            return Answer(401, b'{"detail": "unknown key"}')
        with self.lock:
            if self.exchange_fails:
                return Answer(500, b'{"detail": "token service down"}')
            self.exchanging += 1
            self.most_exchanging = max(self.most_exchanging, self.exchanging)
        time.sleep(0.05)  # a window for a second, concurrent exchange to show up
        now = time.time()
        token = make_jwt(now + self.ttl, now) + secrets.token_hex(4)
        with self.lock:
            self.exchanging -= 1
            self.valid.add(token)
            self.issued.append(token)
        return Answer(200, orjson.dumps({"jwt": token}), {"Content-Type": "application/json"})


def _claims(token: str) -> bytes:
    import base64

    payload = token.split(".")[1]
    return base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))


@pytest.fixture
def jwt_server() -> Iterator[tuple[JwtServer, LocalServer]]:
    fake = JwtServer(ttl=600)
    local = LocalServer(fake.route)
    yield fake, local
    local.stop()


def _transport(url: str, **options: object) -> HTTPTransport:
    options.setdefault("api_key", KEY)
    config = Config(base_url=url, **options)  # type: ignore[arg-type]
    return HTTPTransport(config, backend=RequestsBackend(config), sleep=SleepRecorder())


def test_jwt_mode_sends_the_exchanged_token_and_never_the_key_again(
    jwt_server: tuple[JwtServer, LocalServer],
) -> None:
    fake, local = jwt_server
    transport = _transport(local.url)
    try:
        assert transport.auth.mode == "static"
        assert not transport.auth.dynamic
        authenticate(transport, JWT_ON)
        assert transport.auth.mode == "jwt"
        assert len(fake.issued) == 1
        for _ in range(3):
            transport.request("POST", "/api/v1/work", body=b"{}")
        with transport.stream("/api/v1/file") as download:
            download.read()
    finally:
        transport.close()
    exchange, *work = local.requests
    assert exchange.target == "/api/v1/auth/token"
    assert exchange.body == b"{}"
    assert exchange.headers["x-api-key"] == KEY
    assert [seen.headers["x-api-key"] for seen in work] == [fake.issued[0]] * 4
    assert fake.rejected == 0


def test_streams_to_other_origins_get_no_credential(
    jwt_server: tuple[JwtServer, LocalServer],
) -> None:
    _fake, local = jwt_server
    other = LocalServer()
    transport = _transport(local.url)
    try:
        authenticate(transport, JWT_ON)
        with transport.stream(other.url + "/signed?sig=1") as download:
            download.read()
    finally:
        transport.close()
        other.stop()
    assert "x-api-key" not in other.requests[0].headers


def test_renewal_under_concurrency_is_one_exchange_at_a_time() -> None:
    fake = JwtServer(ttl=2)  # renewed when less than 1 s is left: about every second
    local = LocalServer(fake.route)
    transport = _transport(local.url)
    errors: list[BaseException] = []
    sent = [0]
    stop = time.monotonic() + 3.5

    def hammer() -> None:
        while time.monotonic() < stop:
            try:
                transport.request("POST", "/api/v1/work", body=b"{}")
                sent[0] += 1
            except TinkexError as exc:
                errors.append(exc)
                return

    try:
        authenticate(transport, JWT_ON)
        threads = [threading.Thread(target=hammer) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        transport.close()
        local.stop()
    assert not errors, errors[0]
    assert sent[0] > 50
    assert fake.most_exchanging == 1  # never two renewals at once
    assert 3 <= len(fake.issued) <= 8, len(fake.issued)  # renewed about once a second
    assert fake.rejected == 0  # renewed before expiry: no request ever carried a dead token


def test_a_rejected_jwt_is_replaced_once_and_the_request_replayed(
    jwt_server: tuple[JwtServer, LocalServer],
) -> None:
    fake, local = jwt_server
    transport = _transport(local.url)
    results: list[int] = []
    try:
        authenticate(transport, JWT_ON)
        transport.request("POST", "/api/v1/work", body=b"{}")
        fake.revoke()  # as a rotated signing secret: every token issued so far is refused

        def call() -> None:
            results.append(transport.request("POST", "/api/v1/work", body=b"{}").status_code)

        threads = [threading.Thread(target=call) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        transport.close()
    assert results == [200] * 6
    assert len(fake.issued) == 2  # six refusals of one token cost one exchange
    assert 1 <= fake.rejected <= 6


def test_a_second_refusal_is_an_authentication_error(
    jwt_server: tuple[JwtServer, LocalServer],
) -> None:
    fake, local = jwt_server
    transport = _transport(local.url)
    try:
        authenticate(transport, JWT_ON)
        fake.refuse_all = True
        with pytest.raises(AuthenticationError) as info:
            transport.request("POST", "/api/v1/work", body=b"{}")
    finally:
        transport.close()
    assert "after one replay" in str(info.value)
    work = [seen for seen in local.requests if seen.target == "/api/v1/work"]
    assert len(work) == 2  # the request and its one replay
    assert len(fake.issued) == 2
    for token in fake.issued:
        assert token not in str(info.value)
        assert token not in repr(vars(info.value))


def test_a_failed_renewal_keeps_the_live_token_until_it_expires(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = JwtServer(ttl=3)  # due after about 1.5 s, dead after 3 s
    local = LocalServer(fake.route)
    transport = _transport(local.url, max_retries=0)
    caplog.set_level(logging.WARNING, logger=LOGGER_NAME)
    try:
        with structlog.testing.capture_logs() as logged:
            authenticate(transport, JWT_ON)
            fake.exchange_fails = True
            due = transport.auth._current.refresh_at
            while time.monotonic() < due + 0.05:
                time.sleep(0.05)
            assert transport.request("POST", "/api/v1/work", body=b"{}").status_code == 200
            warned = [e for e in logged if e["log_level"] == "warning"]
            assert [e["event"] for e in warned] == ["tinkex.auth.renew_failed"]
            assert warned[0]["error"] == "InternalServerError"
            dead = transport.auth._current.expires_at
            while time.monotonic() < dead + 0.05:
                time.sleep(0.05)
            with pytest.raises(InternalServerError):
                transport.request("POST", "/api/v1/work", body=b"{}")
            fake.exchange_fails = False
            assert transport.request("POST", "/api/v1/work", body=b"{}").status_code == 200
    finally:
        transport.close()
        local.stop()
    assert fake.rejected == 0


def test_bootstrap_failures_are_typed(jwt_server: tuple[JwtServer, LocalServer]) -> None:
    _fake, local = jwt_server
    wrong = _transport(local.url, api_key="tml-not-accepted-" + secrets.token_hex(4))
    try:
        with pytest.raises(AuthenticationError):
            authenticate(wrong, JWT_ON)
    finally:
        wrong.close()
    garbled = LocalServer(lambda seen: Answer(200, b'{"jwt": "tml-looks-like-a-key-1234"}'))
    transport = _transport(garbled.url)
    try:
        with pytest.raises(ResponseDecodeError) as info:
            authenticate(transport, JWT_ON)
    finally:
        transport.close()
        garbled.stop()
    assert "holds no JWT" in str(info.value)
    assert "looks-like-a-key" not in str(info.value)


def test_the_server_may_ask_for_the_command_to_be_exchanged(
    jwt_server: tuple[JwtServer, LocalServer], tmp_path: Path
) -> None:
    fake, local = jwt_server
    from_command = "tml-from-command-" + secrets.token_hex(6)
    fake.accepted_keys.add(from_command)
    (tmp_path / "key").write_text(from_command)
    transport = _transport(local.url, credential_cmd=f"cat {tmp_path / 'key'}")
    announced = ClientConfigResponse(
        pjwt_auth_enabled=True, credential_default_source="credential_cmd"
    )
    keyless = _transport(local.url)
    try:
        authenticate(transport, announced)
        transport.request("POST", "/api/v1/work", body=b"{}")
        with pytest.raises(ConfigError) as info:
            authenticate(keyless, announced)  # asked for a command, none configured
    finally:
        transport.close()
        keyless.close()
    assert local.requests[0].headers["x-api-key"] == from_command
    assert info.value.field == "credential_cmd"
    assert "TINKER_CREDENTIAL_CMD" in str(info.value)


def test_command_output_is_the_credential_and_is_renewed_after_a_refusal(
    tmp_path: Path,
) -> None:
    first, second = ("tml-cmd-" + secrets.token_hex(8) for _ in range(2))
    accepted = {first}
    runs = tmp_path / "runs"
    key_file = tmp_path / "key"
    key_file.write_text(first)

    def route(seen: Seen) -> Answer:
        if seen.headers.get("x-api-key") in accepted:
            return echo(seen)
        return Answer(401, b'{"detail": "unknown key"}')

    local = LocalServer(route)
    transport = _transport(
        local.url, api_key=None, credential_cmd=f"echo run >> {runs}; cat {key_file}"
    )
    try:
        assert transport.auth.mode == "command"
        transport.request("POST", "/api/v1/work", body=b"{}")
        transport.request("POST", "/api/v1/work", body=b"{}")
        assert runs.read_text().count("run") == 1  # a tml- key is kept until refused
        accepted.clear()
        accepted.add(second)  # the key was rotated; the command prints the new one
        key_file.write_text(second)
        transport.request("POST", "/api/v1/work", body=b"{}")
    finally:
        transport.close()
        local.stop()
    assert runs.read_text().count("run") == 2
    sent = [seen.headers.get("x-api-key") for seen in local.requests]
    assert sent == [first, first, first, second]


def test_credentials_never_reach_errors_or_logs(
    jwt_server: tuple[JwtServer, LocalServer],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake, local = jwt_server
    from_command = "tml-echoed-" + secrets.token_hex(8)
    fake.accepted_keys.add(from_command)
    (tmp_path / "key").write_text(from_command)
    transport = _transport(local.url, api_key=None, credential_cmd=f"cat {tmp_path / 'key'}")
    caplog.set_level(logging.DEBUG, logger=LOGGER_NAME)
    shown: list[str] = []
    try:
        with structlog.testing.capture_logs() as logged:
            authenticate(transport, JWT_ON)
            fake.refuse_all = True
            try:
                transport.request("POST", "/api/v1/work", body=b"{}")
            except AuthenticationError as exc:
                shown += [str(exc), repr(exc), repr(vars(exc))]
            fake.exchange_fails = True
            fake.revoke()
            try:
                transport.request("POST", "/api/v1/work", body=b"{}", max_retries=0)
            except TinkexError as exc:
                shown += [str(exc), repr(exc), repr(vars(exc))]
        shown += [repr(entry) for entry in logged]
        shown += [record.getMessage() for record in caplog.records]
        shown += [repr(transport), repr(transport.auth), repr(transport.config)]
    finally:
        transport.close()
    assert len(shown) > 8
    assert any("tinkex.auth.renewed" in text for text in shown)
    for secret in (from_command, *fake.issued):
        leaked = [text for text in shown if secret in text]
        assert not leaked, leaked[0][:200]
