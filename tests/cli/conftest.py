"""Fixtures of the CLI tests: the null server's connection in the environment, seeded state."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _servers import ServerHandle
from rest._helpers import Seeder


@pytest.fixture
def cli_env(null_server: ServerHandle, monkeypatch: pytest.MonkeyPatch) -> ServerHandle:
    """TINKER_API_KEY / TINKER_BASE_URL of the null server's first tenant."""
    monkeypatch.setenv("TINKER_API_KEY", null_server.api_key)
    monkeypatch.setenv("TINKER_BASE_URL", null_server.base_url)
    return null_server


@pytest.fixture
def seeded(null_server: ServerHandle) -> Iterator[dict[str, str]]:
    """A model with a training and a sampler checkpoint (first tenant)."""
    seeder = Seeder(null_server)
    try:
        session = seeder.session()
        model = seeder.model(session)
        yield {
            "session": session,
            "model": model,
            "weights": seeder.save(model, "w1"),
            "sampler": seeder.save(model, "s1", sampler=True),
        }
    finally:
        seeder.close()
