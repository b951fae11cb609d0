"""Fixtures of the server tests: plain-HTTP clients of the shared null server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _servers import ServerHandle
from tinker.lib.internal_client_holder import _internal_client_holder_thread_singleton

from ._helpers import Api


@pytest.fixture(scope="session", autouse=True)
def _official_sdk_loop() -> None:
    """Start the official SDK's process-wide event-loop thread before any test runs.

    The SDK starts it on first use and never stops it; its name
    (``Thread-N (_background_thread_func)``) matches none of the allowed prefixes of the
    thread-leak check, so the first test to use the SDK would be blamed for it.
    """
    _internal_client_holder_thread_singleton.get_loop()


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
