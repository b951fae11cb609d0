"""The null engine in-process: plausible, deterministic, exact checkpoints, no torch."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinkex_actors.server.engine_api import (
    AdamSpec,
    EngineDatum,
    EngineNotFoundError,
    EngineUserError,
    LoraSpec,
    SampleSpec,
)
from tinkex_actors.server.engines import load_engine
from tinkex_actors.server.engines.null_engine import NullEngine

MODEL = "tinkex/tiny-llama"


def _datum(n: int = 6, **inputs: np.ndarray) -> EngineDatum:
    tokens = np.arange(1, n + 1, dtype=np.int64)
    return EngineDatum(tokens=tokens, inputs={"target_tokens": tokens + 1, **inputs})


def _loss(
    engine: NullEngine, model: str, loss: str = "cross_entropy", **inputs: np.ndarray
) -> float:
    out = engine.forward_backward(model, [_datum(**inputs)], loss, {}, forward_only=True)
    assert out.outputs[0]["logprobs"].shape == (6,)
    return out.metrics["loss:sum"]


def _train(engine: NullEngine, model: str, steps: int) -> None:
    for _ in range(steps):
        engine.forward_backward(model, [_datum()], "cross_entropy", {}, forward_only=False)
        engine.optim_step(model, AdamSpec(learning_rate=1e-3))


@pytest.fixture
def engine() -> NullEngine:
    engine = NullEngine(vocab_size=256)
    engine.start()
    engine.create_adapter("m", MODEL, LoraSpec(rank=4, seed=1))
    return engine


def test_losses_fall_and_the_base_model_is_reported(engine: NullEngine) -> None:
    (info,) = engine.base_models()
    assert info.vocab_size == 256
    assert info.name == info.tokenizer_id == MODEL
    losses = [_loss(engine, "m")]
    for _ in range(5):
        _train(engine, "m", 1)
        losses.append(_loss(engine, "m"))
    assert all(b < a for a, b in itertools.pairwise(losses))
    assert losses[0] == pytest.approx(6 * np.log(256), rel=0.2)  # untrained: a uniform guess


def test_every_loss_runs(engine: NullEngine) -> None:
    rl = {
        "logprobs": np.full(6, -3.0, dtype=np.float32),
        "advantages": np.linspace(-1, 1, 6).astype(np.float32),
    }
    for loss in ("importance_sampling", "ppo", "cispo", "dro"):
        assert np.isfinite(_loss(engine, "m", loss, **rl))
    with pytest.raises(EngineUserError):
        _loss(engine, "m", "ppo")  # no advantages
    with pytest.raises(EngineUserError):
        _loss(engine, "m", "nope", **rl)


def test_checkpoints_round_trip_exactly(engine: NullEngine, tmp_path: Path) -> None:
    _train(engine, "m", 3)
    engine.save_state("m", tmp_path, with_optimizer=True)
    assert engine.read_checkpoint_config(tmp_path) == (MODEL, LoraSpec(rank=4, seed=1))
    _train(engine, "m", 2)
    reference = _loss(engine, "m")
    for with_optimizer, expect_same in ((True, True), (False, False)):
        engine.create_adapter("copy", MODEL, LoraSpec(rank=4))
        engine.load_state("copy", tmp_path, with_optimizer=with_optimizer)
        _train(engine, "copy", 2)
        assert (_loss(engine, "copy") == reference) is expect_same
        engine.drop_adapter("copy")
    with pytest.raises(EngineNotFoundError):
        _loss(engine, "copy")


def test_sampling_is_deterministic_per_seed(engine: NullEngine) -> None:
    engine.create_sampler("s", MODEL)
    spec = SampleSpec(
        prompt=[1, 2, 3], max_tokens=8, num_samples=2, temperature=0.9, top_k=20, top_p=0.8, seed=7
    )
    first, again = engine.sample("s", spec), engine.sample("s", spec)
    assert [s.tokens for s in first.sequences] == [s.tokens for s in again.sequences]
    other = engine.sample("s", SampleSpec(**{**spec.__dict__, "seed": 8}))
    assert [s.tokens for s in other.sequences] != [s.tokens for s in first.sequences]
    greedy = SampleSpec(prompt=[1, 2, 3], max_tokens=5, temperature=0.0)
    tokens = engine.sample("s", greedy).sequences[0].tokens
    stop = SampleSpec(prompt=[1, 2, 3], max_tokens=5, temperature=0.0, stop_token_ids=(tokens[1],))
    stopped = engine.sample("s", stop).sequences[0]
    assert stopped.tokens == tokens[:2]
    assert stopped.stop_reason == "stop"
    scored = engine.sample(
        "s",
        SampleSpec(prompt=[1, 2, 3], max_tokens=1, prompt_logprobs=True, topk_prompt_logprobs=2),
    )
    assert scored.prompt_logprobs is not None
    assert scored.prompt_logprobs[0] is None
    assert len(scored.prompt_logprobs) == 3
    assert scored.topk_prompt_logprobs is not None
    assert [len(r or []) for r in scored.topk_prompt_logprobs] == [0, 2, 2]
    with pytest.raises(EngineNotFoundError):
        engine.sample("missing", spec)


def test_load_engine_null_never_imports_torch() -> None:
    code = (
        "import sys; from pathlib import Path;"
        "from tinkex_actors.server.engines import load_engine;"
        "e = load_engine('null', data_dir=Path('.'), models={}, simulate_ms=0, threads=0);"
        "e.start(); assert 'torch' not in sys.modules, 'torch imported'; print(e.name)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "null"
    with pytest.raises(ValueError, match="engine"):
        load_engine("cuda", data_dir=Path("."), models={}, simulate_ms=0, threads=0)
