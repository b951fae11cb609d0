"""Datum builders shared by the torch engine tests."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import numpy as np

from tinkex_actors.server.engine_api import EngineDatum, SampleSpec

BASE = "tinkex/tiny-llama"
VOCAB = 2048
EOS = 1


def uid(prefix: str = "m") -> str:
    """A unique adapter or sampler id."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def sequence(seed: int, length: int) -> np.ndarray:
    """``length + 1`` fixed pseudo-random token ids (no special tokens)."""
    return np.random.default_rng(seed).integers(3, VOCAB, length + 1).astype(np.int64)


def ce_datum(
    tokens: Sequence[int] | np.ndarray, weights: Sequence[float] | None = None
) -> EngineDatum:
    """A next-token cross_entropy datum over ``tokens`` (input tokens[:-1], targets tokens[1:])."""
    seq = np.asarray(tokens, dtype=np.int64)
    inputs = {"target_tokens": seq[1:].copy()}
    if weights is not None:
        inputs["weights"] = np.asarray(weights, dtype=np.float32)
    return EngineDatum(tokens=seq[:-1].copy(), inputs=inputs)


def dataset(n: int = 4, length: int = 16, seed: int = 0) -> list[EngineDatum]:
    """``n`` fixed next-token datums of ``length`` tokens."""
    return [ce_datum(sequence(seed + i, length)) for i in range(n)]


def rl_datum(
    tokens: np.ndarray, sampler_logprobs: np.ndarray, advantages: np.ndarray
) -> EngineDatum:
    """An RL datum (target_tokens, logprobs, advantages) over ``tokens``."""
    return EngineDatum(
        tokens=tokens[:-1].copy(),
        inputs={
            "target_tokens": tokens[1:].copy(),
            "logprobs": np.asarray(sampler_logprobs, dtype=np.float32),
            "advantages": np.asarray(advantages, dtype=np.float32),
        },
    )


def greedy(prompt: Sequence[int], max_tokens: int, **kwargs: object) -> SampleSpec:
    """A greedy sample request that does not stop early unless told to."""
    options: dict[str, object] = {"temperature": 0.0, "stop_strings": ()}
    options.update(kwargs)
    return SampleSpec(prompt=list(prompt), max_tokens=max_tokens, **options)  # type: ignore[arg-type]
