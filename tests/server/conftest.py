"""Fixtures of the server tests: plain-HTTP clients of the shared null server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _servers import ServerHandle

from ._helpers import Api


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
