"""The Dimuon optimizer of the torch engine: its update direction, learning the demo's facts,
determinism, checkpoints that keep its state, and refusing the other family's parameters."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from tokenizers import Tokenizer

from tinkex_actors.demo import load_facts
from tinkex_actors.server.engine_api import (
    ADAPTER_CONFIG_FILE,
    OPTIMIZER_STATE_FILE,
    AdamSpec,
    DimuonSpec,
    EngineDatum,
    EngineUserError,
    LoraSpec,
    OptimizerSpec,
)
from tinkex_actors.server.engines.torch._optim import dimuon_direction
from tinkex_actors.server.engines.torch_engine import TorchEngine

from ._util import BASE, EOS, dataset, uid

pytestmark = pytest.mark.torch

DIMUON = OptimizerSpec(type="dimuon", version=1)
STEP = DimuonSpec(learning_rate=0.03)


@pytest.fixture(scope="module")
def facts(engine_dirs: tuple[Path, Path], engine: TorchEngine) -> list[EngineDatum]:
    """The demo's facts as datums (prompt + completion + EOS, trained on the completion)."""
    data_dir, _ = engine_dirs
    tokenizer = Tokenizer.from_file(str(next(data_dir.rglob("tokenizer.json"))))
    out = []
    for fact in load_facts():
        prompt = tokenizer.encode(fact.prompt).ids
        tokens = prompt + tokenizer.encode(fact.completion).ids + [EOS]
        weights = [0.0] * (len(prompt) - 1) + [1.0] * (len(tokens) - len(prompt))
        out.append(
            EngineDatum(
                tokens=np.array(tokens[:-1]),
                inputs={
                    "target_tokens": np.array(tokens[1:]),
                    "weights": np.array(weights, dtype=np.float32),
                },
            )
        )
    return out


def _train(engine: TorchEngine, model_id: str, data: list[EngineDatum], steps: int) -> list[float]:
    losses = []
    for _ in range(steps):
        out = engine.forward_backward(model_id, data, "cross_entropy", {}, forward_only=False)
        losses.append(out.metrics["loss:sum"])
        engine.optim_step(model_id, STEP)
    return losses


@pytest.mark.parametrize("shape", [(8, 128), (384, 8), (5, 5)])
def test_direction_is_orthogonal_with_frobenius_norm_sqrt_rank(shape: tuple[int, int]) -> None:
    momentum = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    rank = 8
    direction = dimuon_direction(momentum, rank)
    assert direction.shape == momentum.shape
    assert float(torch.linalg.matrix_norm(direction)) == pytest.approx(rank**0.5, rel=1e-5)
    singular = torch.linalg.svdvals(direction)
    # Newton-Schulz's matrix sign: every singular value near one common value.
    assert float(singular.max() / singular.min()) < 2.0
    # It points downhill: a positive inner product with the momentum.
    assert float((direction * momentum).sum()) > 0
    assert torch.equal(dimuon_direction(torch.zeros(*shape), rank), torch.zeros(*shape))


def test_dimuon_learns_the_demo_facts(
    engine: TorchEngine, facts: list[EngineDatum], new_id: list[str]
) -> None:
    model_id = uid()
    new_id.append(model_id)
    engine.create_adapter(model_id, BASE, LoraSpec(rank=8, seed=0), DIMUON)
    losses = _train(engine, model_id, facts, 12)
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0], losses
    assert all(b < a for a, b in itertools.pairwise(losses)), losses


def test_dimuon_is_deterministic_and_differs_from_adamw(
    engine: TorchEngine, new_id: list[str]
) -> None:
    data = dataset(n=2, length=10, seed=5)
    runs = []
    for optimizer in (DIMUON, DIMUON, None):
        model_id = uid()
        new_id.append(model_id)
        engine.create_adapter(model_id, BASE, LoraSpec(rank=8, seed=3), optimizer)
        losses = []
        for _ in range(4):
            out = engine.forward_backward(model_id, data, "cross_entropy", {}, forward_only=False)
            losses.append(out.metrics["loss:sum"])
            engine.optim_step(model_id, STEP if optimizer else AdamSpec(learning_rate=0.03))
        runs.append(losses)
    assert runs[0] == runs[1]
    assert runs[0][1:] != runs[2][1:]


def test_checkpoint_keeps_dimuon_state(
    engine: TorchEngine, tmp_path: Path, new_id: list[str]
) -> None:
    data = dataset(n=2, length=10, seed=6)
    model_id, copy, fresh = uid(), uid(), uid()
    new_id.extend([model_id, copy, fresh])
    engine.create_adapter(model_id, BASE, LoraSpec(rank=8, seed=4), DIMUON)
    _train(engine, model_id, data, 3)
    engine.save_state(model_id, tmp_path, with_optimizer=True)
    config = json.loads((tmp_path / ADAPTER_CONFIG_FILE).read_text())
    assert config["tinkex"]["optimizer"] == {"type": "dimuon", "version": 1}
    assert engine.read_checkpoint_optimizer(tmp_path) == DIMUON
    with safe_open(str(tmp_path / OPTIMIZER_STATE_FILE), framework="pt") as handle:
        assert handle.metadata()["optimizer"] == "tinkex-dimuon-1"
        names = list(handle.keys())
    assert names
    assert all(n.endswith((".momentum", ".step")) for n in names)
    expected = _train(engine, model_id, data, 3)
    # Resumed with its momentum: exactly the uninterrupted losses.
    engine.create_adapter(copy, BASE, LoraSpec(rank=8, seed=99), DIMUON)
    engine.load_state(copy, tmp_path, with_optimizer=True)
    assert _train(engine, copy, data, 3) == expected
    # Without it the momentum restarts: another trajectory.
    engine.create_adapter(fresh, BASE, LoraSpec(rank=8, seed=99), DIMUON)
    engine.load_state(fresh, tmp_path, with_optimizer=False)
    resumed = _train(engine, fresh, data, 3)
    assert resumed[0] == expected[0]
    assert resumed[1:] != expected[1:]


def test_families_do_not_mix(engine: TorchEngine, tmp_path: Path, new_id: list[str]) -> None:
    data = dataset(n=1, length=8, seed=7)
    dimuon, adamw = uid(), uid()
    new_id.extend([dimuon, adamw])
    engine.create_adapter(dimuon, BASE, LoraSpec(rank=4, seed=1), DIMUON)
    engine.create_adapter(adamw, BASE, LoraSpec(rank=4, seed=1))
    engine.forward_backward(dimuon, data, "cross_entropy", {}, forward_only=False)
    before = engine.forward_backward(dimuon, data, "cross_entropy", {}, forward_only=True)
    with pytest.raises(EngineUserError, match=r"Dimuon optimizer \(dimuon\).*AdamParams"):
        engine.optim_step(dimuon, AdamSpec(learning_rate=1.0))
    with pytest.raises(EngineUserError, match=r"AdamW optimizer \(adamw\).*DimuonParams"):
        engine.optim_step(adamw, STEP)
    after = engine.forward_backward(dimuon, data, "cross_entropy", {}, forward_only=True)
    np.testing.assert_array_equal(before.outputs[0]["logprobs"], after.outputs[0]["logprobs"])
    # The refused step left the accumulated gradient in place: a Dimuon step now uses it.
    engine.optim_step(dimuon, STEP)
    moved = engine.forward_backward(dimuon, data, "cross_entropy", {}, forward_only=True)
    assert moved.metrics["loss:sum"] < before.metrics["loss:sum"]
    engine.save_state(dimuon, tmp_path, with_optimizer=True)
    with pytest.raises(EngineUserError, match=r"holds Dimuon .* uses AdamW"):
        engine.load_state(adamw, tmp_path, with_optimizer=True)
    engine.load_state(adamw, tmp_path, with_optimizer=False)  # weights alone load anywhere
    with pytest.raises(EngineUserError, match="unknown optimizer"):
        engine.create_adapter(uid(), BASE, LoraSpec(rank=4), OptimizerSpec("dimuon", 2))
    with pytest.raises(EngineUserError, match=r"optimizer_params\.beta1"):
        engine.optim_step(dimuon, DimuonSpec(learning_rate=0.1, beta1=1.0))
