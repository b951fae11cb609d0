"""Fixtures of the RestClient tests: clients of the shared null server as its two tenants."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _servers import ServerHandle

from tinkex_actors import Config
from tinkex_actors.rest import RestClient

from ._helpers import Seeder


@pytest.fixture
def rest(null_server: ServerHandle) -> Iterator[RestClient]:
    """A RestClient of the null server's first tenant."""
    with RestClient(Config(api_key=null_server.api_key, base_url=null_server.base_url)) as client:
        yield client


@pytest.fixture
def other_rest(null_server: ServerHandle) -> Iterator[RestClient]:
    """A RestClient of the null server's second tenant."""
    config = Config(api_key=null_server.other_api_key, base_url=null_server.base_url)
    with RestClient(config) as client:
        yield client


@pytest.fixture
def seeder(null_server: ServerHandle) -> Iterator[Seeder]:
    """Plain-HTTP creation of sessions, models and checkpoints (first tenant)."""
    seed = Seeder(null_server)
    yield seed
    seed.close()


@pytest.fixture
def trained(seeder: Seeder) -> dict[str, str]:
    """A session, a model, a training checkpoint and a sampler checkpoint."""
    session = seeder.session()
    model = seeder.model(session)
    return {
        "session": session,
        "model": model,
        "weights": seeder.save(model, "w1"),
        "sampler": seeder.save(model, "s1", sampler=True),
    }
