"""Fixtures: a scriptable local HTTP server and transports that are closed after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tinkex_actors.config import Config
from tinkex_actors.transport import HTTPTransport, RequestsBackend

from ._server import LocalServer

API_KEY = "tml-transport-test-key-0123456789"

MakeTransport = Callable[..., HTTPTransport]


@pytest.fixture
def server() -> Iterator[LocalServer]:
    srv = LocalServer()
    yield srv
    srv.stop()


@pytest.fixture
def other_server() -> Iterator[LocalServer]:
    """A second server: another origin (a different port)."""
    srv = LocalServer()
    yield srv
    srv.stop()


@pytest.fixture
def make_transport() -> Iterator[MakeTransport]:
    """Build transports (on the requests backend); all are closed after the test."""
    made: list[HTTPTransport] = []

    def make(base_url: str, **kwargs: Any) -> HTTPTransport:
        transport_kwargs = {
            k: kwargs.pop(k) for k in ("sleep", "uniform", "wall_clock") if k in kwargs
        }
        config = Config(api_key=kwargs.pop("api_key", API_KEY), base_url=base_url, **kwargs)
        backend = RequestsBackend(config)
        transport = HTTPTransport(config, backend=backend, **transport_kwargs)
        made.append(transport)
        return transport

    yield make
    for transport in made:
        transport.close()
