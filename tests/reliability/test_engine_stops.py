"""The null engine stops sampling as the torch engine does (docs/server-engine.md, "Stops").

EOS ends a sequence unless the stop list is explicitly empty; stop token ids are added to EOS,
they do not replace it (the null engine used to drop EOS when stop token ids were given).
"""

from __future__ import annotations

import pytest

from tinkex_actors.server.engine_api import SampleSpec
from tinkex_actors.server.engines.null_engine import NullEngine

EOS = 1
MODEL = "tinkex/tiny-llama"


@pytest.fixture
def engine() -> NullEngine:
    engine = NullEngine()
    engine.start()
    engine.create_sampler("s", MODEL)
    return engine


def _tokens(engine: NullEngine, seed: int, **stops: tuple[object, ...] | None) -> list[int]:
    spec = SampleSpec(prompt=[5, 6], max_tokens=200, temperature=2.0, seed=seed, **stops)  # type: ignore[arg-type]
    sequence = engine.sample("s", spec).sequences[0]
    assert sequence.stop_reason == ("length" if len(sequence.tokens) == 200 else "stop")
    return sequence.tokens


def test_eos_stops_unless_the_stop_list_is_explicitly_empty(engine: NullEngine) -> None:
    # A seed whose free-running sequence (nothing stops it) emits EOS somewhere.
    runs = {seed: _tokens(engine, seed, stop_token_ids=(), stop_strings=()) for seed in range(60)}
    seed, free = next((s, t) for s, t in runs.items() if EOS in t[:-1])
    at = free.index(EOS)
    unused = next(t for t in range(3, 2048) if t not in free[: at + 1])
    # No stop list: EOS stops. Stop token ids or stop strings: EOS still stops.
    assert _tokens(engine, seed) == free[: at + 1]
    assert _tokens(engine, seed, stop_token_ids=(unused,)) == free[: at + 1]
    assert _tokens(engine, seed, stop_strings=("never",)) == free[: at + 1]
    # An explicitly empty list (stop=[]) lets the sequence run past EOS.
    assert len(free) > at + 1


def test_stop_token_ids_add_to_eos(engine: NullEngine) -> None:
    free = _tokens(engine, 0, stop_token_ids=(), stop_strings=())
    target = free[3]
    stopped = _tokens(engine, 0, stop_token_ids=(target,))
    assert stopped == free[: free.index(target) + 1]
