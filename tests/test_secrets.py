"""The API key (and the other secrets) never appear in logs, reprs, errors or telemetry.

A scenario drives the real transport through successes, retries, status errors whose body
echoes the key, connection failures, timeouts and downloads, while every log line, telemetry
event, repr and exception text is collected; then the collection is searched for each secret.
"""

from __future__ import annotations

import logging
import secrets
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from transport._server import Answer, LocalServer, Seen, echo

from tinkex_actors import telemetry
from tinkex_actors._logging import LOGGER_NAME
from tinkex_actors.config import Config
from tinkex_actors.errors import TinkexError
from tinkex_actors.testing import SleepRecorder
from tinkex_actors.transport import HTTPTransport

API_KEY = "tml-" + secrets.token_hex(16)
CF_SECRET = "cfsecret" + secrets.token_hex(8)
HEADER_SECRET = "hdrsecret" + secrets.token_hex(8)
SECRETS = (API_KEY, CF_SECRET, HEADER_SECRET)


def leaky(seen: Seen) -> Answer:
    """A server that echoes the credentials it got back into error bodies and headers."""
    if seen.target.endswith("/leak"):
        h = seen.headers
        body = f"bad key {h.get('x-api-key')} / {h.get('cf-access-client-secret')}"
        return Answer(401, body.encode(), {"X-Echo": seen.headers.get("x-api-key", "")})
    return echo(seen)


@pytest.fixture
def servers() -> Iterator[tuple[LocalServer, LocalServer]]:
    base, other = LocalServer(leaky), LocalServer()
    yield base, other
    base.stop()
    other.stop()


def scenario(base: LocalServer, other: LocalServer) -> list[str]:
    """Drive the transport through every path; return every text it produced."""
    shown: list[str] = []
    config = Config(
        api_key=API_KEY,
        base_url=base.url,
        cf_access_client_id="cf-id",
        cf_access_client_secret=CF_SECRET,
        default_headers={"X-Extra-Token": HEADER_SECRET},
    )
    shown += [repr(config), str(config), repr(config.tenant_key), config.tenant_id]
    transport = HTTPTransport(config, sleep=SleepRecorder())
    shown.append(repr(transport))

    def attempt(fn: Any) -> None:
        try:
            fn()
        except TinkexError as exc:
            shown.extend([str(exc), repr(exc), repr(exc.args), repr(vars(exc))])
            if exc.__cause__ is not None:
                shown.append(str(exc.__cause__))

    try:
        reply = transport.request("POST", "/api/v1/ok", body=b"{}")
        shown += [repr(reply), str(dict(reply.headers))]
        base.script(Answer(503), Answer(429, b"", {"Retry-After": "1"}), then=leaky)
        transport.request("POST", "/api/v1/retried", body=b"{}")
        attempt(lambda: transport.request("POST", "/api/v1/leak", body=b"{}"))
        base.script(Answer(delay=3.0), then=leaky)
        attempt(lambda: transport.request("GET", "/api/v1/slow", timeout=0.1, max_retries=0))
        with transport.stream(other.url + "/file?sig=1") as download:
            shown.append(repr(download))
            download.read()
    finally:
        transport.close()

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    refused = HTTPTransport(config.with_(base_url=dead, max_retries=1), sleep=SleepRecorder())
    attempt(lambda: refused.request("GET", "/api/v1/healthz"))
    refused.close()
    return shown


def test_no_secret_in_logs_reprs_errors_or_telemetry(
    servers: tuple[LocalServer, LocalServer], caplog: pytest.LogCaptureFixture
) -> None:
    base, other = servers
    events: list[str] = []
    telemetry.attach(
        "secrets-recorder",
        list(telemetry.ALL_EVENTS),
        lambda e, m, md, _: events.append(repr((e, dict(m), dict(md)))),
    )
    logger_id = telemetry.attach_logger(logging.DEBUG, stream=None)
    caplog.set_level(logging.DEBUG, logger=LOGGER_NAME)
    try:
        shown = scenario(base, other)
        with structlog.testing.capture_logs() as structured:
            shown += scenario(base, other)
    finally:
        telemetry.detach("secrets-recorder")
        telemetry.detach(logger_id)
    lines = [record.getMessage() for record in caplog.records]
    lines += [repr(entry) for entry in structured]

    # The scenario really exercised the paths being checked.
    assert base.requests[0].headers["x-api-key"] == API_KEY
    assert any("retry_scheduled" in line for line in lines)
    assert any("tinkex.http.request.exception" in line for line in lines)
    assert any("HTTP 401" in text for text in shown)
    assert any("timed out" in text for text in shown)
    assert any("could not connect" in text for text in shown)
    assert len(events) > 10

    for secret in SECRETS:
        for where, texts in (("log", lines), ("telemetry", events), ("repr/error", shown)):
            leaked = [text for text in texts if secret in text]
            assert not leaked, f"a secret leaked into a {where}: {leaked[0][:200]}"


def test_no_credential_from_a_command_or_a_jwt_leaks(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The new sources: a credential command's output (and the command line, which may hold a
    token of its own) and exchanged JWTs, through echoing error bodies, logs and telemetry."""
    from test_credentials import make_jwt

    from tinkex_actors.actors._session import authenticate
    from tinkex_actors.types import ClientConfigResponse

    printed = "tml-" + secrets.token_hex(16)
    command_token = "cmdtoken" + secrets.token_hex(8)
    (tmp_path / "key").write_text(printed)
    command = f"cat {tmp_path / 'key'} # {command_token}"
    issued: list[str] = []

    def route(seen: Seen) -> Answer:
        if seen.target.endswith("/auth/token"):
            token = make_jwt(9_999_999_999, 1) + secrets.token_hex(4)
            issued.append(token)
            return Answer(200, b'{"jwt": "%s"}' % token.encode())
        if seen.target.endswith("/leak"):
            presented = seen.headers.get("x-api-key", "")
            body = f"bad credential {presented}".encode()
            return Answer(401, body, {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return echo(seen)

    server = LocalServer(route)
    events: list[str] = []
    telemetry.attach(
        "secrets-recorder-2",
        list(telemetry.ALL_EVENTS),
        lambda e, m, md, _: events.append(repr((e, dict(m), dict(md)))),
    )
    caplog.set_level(logging.DEBUG, logger=LOGGER_NAME)
    shown: list[str] = []
    config = Config(credential_cmd=command, base_url=server.url)
    transport = HTTPTransport(config, sleep=SleepRecorder())
    try:
        with structlog.testing.capture_logs() as structured:
            transport.request("POST", "/api/v1/ok", body=b"{}")  # command mode
            authenticate(transport, ClientConfigResponse(pjwt_auth_enabled=True))
            transport.request("POST", "/api/v1/ok", body=b"{}")  # the JWT
            try:
                transport.request("POST", "/api/v1/leak", body=b"{}")
            except TinkexError as exc:
                shown += [str(exc), repr(exc), repr(exc.args), repr(vars(exc))]
        shown += [repr(config), str(config), config.tenant_id, repr(config.tenant_key)]
        shown += [config.credential_source, repr(transport), repr(transport.auth)]
        shown += [repr(entry) for entry in structured]
    finally:
        transport.close()
        server.stop()
        telemetry.detach("secrets-recorder-2")
    shown += [record.getMessage() for record in caplog.records]
    assert server.requests[0].headers["x-api-key"] == printed
    assert len(issued) == 2  # the first token and the replay's
    assert any("HTTP 401" in text for text in shown)
    for secret in (printed, command_token, *issued):
        for where, texts in (("log/repr/error", shown), ("telemetry", events)):
            leaked = [text for text in texts if secret in text]
            assert not leaked, f"a secret leaked into a {where}: {leaked[0][:200]}"
