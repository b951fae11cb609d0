"""Fixtures of the actor-runtime tests: clients of the shared null server, a slow server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _servers import ServerHandle, session_server

from tinkex_actors import Config, ServiceClient, TrainingClient, types

BASE_MODEL = "tinkex/tiny-llama"

#: A null server whose forward_backward and optim_step each take 50 ms (per model, serialized).
SLOW_SERVER_ARGS = ("--simulate-ms=50", "--poll-hold-seconds=2")


def datum(tokens: list[int], weights: list[float] | None = None) -> types.Datum:
    """Next-token cross-entropy over ``tokens``."""
    targets = tokens[1:]
    return types.Datum(
        types.ModelInput.from_ints(tokens[:-1]),
        {"target_tokens": targets, "weights": weights or [1.0] * len(targets)},
    )


@pytest.fixture(scope="session")
def slow_server() -> Iterator[ServerHandle]:
    """A null server with 50 ms of simulated work per forward_backward and optim_step."""
    with session_server("null", extra_args=SLOW_SERVER_ARGS) as handle:
        yield handle


@pytest.fixture
def config(null_server: ServerHandle) -> Config:
    """The shared null server, first tenant."""
    return Config(api_key=null_server.api_key, base_url=null_server.base_url)


@pytest.fixture
def service(config: Config) -> Iterator[ServiceClient]:
    """A ServiceClient, closed after the test."""
    client = ServiceClient(config)
    yield client
    client.close()


@pytest.fixture
def training(service: ServiceClient) -> TrainingClient:
    """A LoRA training client on the null server."""
    return service.create_lora_training_client(BASE_MODEL, timeout=30)
