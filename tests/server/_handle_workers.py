"""What the child processes of ``test_sampler_handles`` run (importable after ``spawn``).

Each function samples ``PROMPT`` with ``PARAMS`` (a fixed seed: the null engine then answers
the same tokens every time) a few times from a restored sampling client, closes it and reports
what it saw as plain data: its process id, its clone id, the tokens, or the error it got.
"""

from __future__ import annotations

import os
from typing import Any

from tinkex_actors import SamplingClient
from tinkex_actors.errors import TinkexError
from tinkex_actors.types import ModelInput, SamplingParams

PROMPT = ModelInput.from_ints([3, 4, 5, 6])
PARAMS = SamplingParams(max_tokens=5, seed=11)
TIMEOUT = 60.0


def _report(client: SamplingClient, samples: int) -> dict[str, Any]:
    try:
        tokens = [
            list(client.sample(PROMPT, PARAMS).result(TIMEOUT).sequences[0].tokens)
            for _ in range(samples)
        ]
        return {"pid": os.getpid(), "clone_id": client.clone_id, "tokens": tokens}
    finally:
        client.close()


def _failure(exc: TinkexError) -> dict[str, Any]:
    return {"pid": os.getpid(), "error": type(exc).__name__, "message": str(exc)}


def sample_task(client: SamplingClient, samples: int) -> dict[str, Any]:
    """Sample with a client this process received (unpickled, or inherited through fork)."""
    try:
        return _report(client, samples)
    except TinkexError as exc:
        return _failure(exc)


def sample_from_handle(handle: str, api_key: str | None, samples: int) -> dict[str, Any]:
    """Restore a client from a handle (this process's credentials unless ``api_key``)."""
    try:
        client = SamplingClient.from_sampler_handle(handle, api_key=api_key)
        return _report(client, samples)
    except TinkexError as exc:
        return _failure(exc)


def sample_into(client: SamplingClient, samples: int, out: Any) -> None:
    """``multiprocessing.Process`` target: :func:`sample_task`, the report put on ``out``."""
    out.put(sample_task(client, samples))


def unpickle_into(payload: bytes, out: Any) -> None:
    """``Process`` target: unpickle a client and report what happened."""
    import pickle

    try:
        client = pickle.loads(payload)
    except TinkexError as exc:
        out.put(_failure(exc))
        return
    out.put(sample_task(client, 1))
