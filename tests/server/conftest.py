"""Fixtures of the server tests: plain-HTTP clients of the shared null server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from _servers import ServerHandle, session_server

from ._helpers import JWT_LONG_TTL, JWT_SHORT_TTL, Api


@pytest.fixture
def api(null_server: ServerHandle) -> Iterator[Api]:
    """The shared null server, as its first tenant."""
    client = Api(null_server)
    yield client
    client.close()


@pytest.fixture
def other_api(null_server: ServerHandle) -> Iterator[Api]:
    """The shared null server, as its second tenant."""
    client = Api(null_server, null_server.other_api_key)
    yield client
    client.close()


def _jwt_server(ttl: int) -> Iterator[ServerHandle]:
    args = ("--jwt-auth", f"--jwt-ttl={ttl}", "--test-hooks")
    with session_server("null", extra_args=args) as handle:
        yield handle


@pytest.fixture(scope="module")
def jwt_short_server() -> Iterator[ServerHandle]:
    """A private ``--jwt-auth`` null server (with the test hooks) whose JWTs live 2 s."""
    yield from _jwt_server(JWT_SHORT_TTL)


@pytest.fixture(scope="module")
def jwt_long_server() -> Iterator[ServerHandle]:
    """A private ``--jwt-auth`` null server (with the test hooks) whose JWTs live 10 minutes."""
    yield from _jwt_server(JWT_LONG_TTL)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A private event loop for in-process tests of the server's async pieces."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()
