"""The official ``tinker`` SDK (0.38) pointed at a test server."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import tinker
from _servers import ServerHandle
from tinker import types

CLOSE_TIMEOUT = 60


@contextlib.contextmanager
def service_client(
    server: ServerHandle, api_key: str | None = None
) -> Iterator[tinker.ServiceClient]:
    """A ServiceClient on ``server``; its session is finished on exit."""
    client = tinker.ServiceClient(base_url=server.base_url, api_key=api_key or server.api_key)
    try:
        yield client
    finally:
        client.close("success").result(timeout=CLOSE_TIMEOUT)


def rest_client(server: ServerHandle, api_key: str | None = None) -> tinker.RestClient:
    """A session-less RestClient on ``server``."""
    return tinker.RestClient(base_url=server.base_url, api_key=api_key or server.api_key)


def ce_datum(tokens: list[int], weights: list[float] | None = None) -> types.Datum:
    """Next-token cross-entropy over ``tokens``."""
    inputs = tokens[:-1]
    targets = tokens[1:]
    return types.Datum(
        model_input=types.ModelInput.from_ints(inputs),
        loss_fn_inputs={
            "target_tokens": targets,
            "weights": weights if weights is not None else [1.0] * len(targets),
        },
    )
