"""save_state / load_state / save_sampler_weights of the torch engine: exact resumption."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tinkex_actors.server.engine_api import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_WEIGHTS_FILE,
    OPTIMIZER_STATE_FILE,
    AdamSpec,
    EngineUserError,
    LoraSpec,
)
from tinkex_actors.server.engines.torch_engine import TorchEngine

from ._util import BASE, dataset, greedy, uid
from .conftest import THREADS

pytestmark = pytest.mark.torch

ADAM = AdamSpec(learning_rate=3e-3, weight_decay=0.01, grad_clip_norm=50.0)
SPEC = LoraSpec(rank=8, seed=21, train_unembed=False)


def steps(engine: TorchEngine, model_id: str, n: int, offset: int = 0) -> list[float]:
    losses = []
    for i in range(n):
        data = dataset(n=2, length=12, seed=100 + offset + i)
        out = engine.forward_backward(model_id, data, "cross_entropy", {}, forward_only=False)
        losses.append(out.metrics["loss:sum"])
        engine.optim_step(model_id, ADAM)
    return losses


def new_dir(root: Path) -> Path:
    directory = root / uid("ckpt")
    directory.mkdir()
    return directory


@pytest.fixture
def trained(
    engine: TorchEngine, tmp_path: Path, new_id: list[str]
) -> tuple[str, Path, list[float]]:
    """An adapter trained 3 steps, saved with optimizer, and its next 3 losses."""
    model_id = uid()
    new_id.append(model_id)
    engine.create_adapter(model_id, BASE, SPEC)
    steps(engine, model_id, 3)
    directory = new_dir(tmp_path)
    engine.save_state(model_id, directory, with_optimizer=True)
    return model_id, directory, steps(engine, model_id, 3, offset=3)


def test_files_and_config(engine: TorchEngine, trained: tuple[str, Path, list[float]]) -> None:
    _, directory, _ = trained
    names = {p.name for p in directory.iterdir()}
    assert names == {ADAPTER_WEIGHTS_FILE, ADAPTER_CONFIG_FILE, OPTIMIZER_STATE_FILE}
    config = json.loads((directory / ADAPTER_CONFIG_FILE).read_text())
    assert config["peft_type"] == "LORA"
    assert config["r"] == 8
    assert config["base_model_name_or_path"] == BASE
    assert not any("lm_head" in t for t in config["target_modules"])
    assert engine.read_checkpoint_config(directory) == (BASE, SPEC)


def test_load_with_optimizer_resumes_exactly(
    engine: TorchEngine, trained: tuple[str, Path, list[float]], new_id: list[str]
) -> None:
    model_id, directory, expected = trained
    # Into the same adapter (its weights and optimizer have moved on since the save) ...
    engine.load_state(model_id, directory, with_optimizer=True)
    assert steps(engine, model_id, 3, offset=3) == expected
    # ... and into a fresh adapter with another seed.
    other = uid()
    new_id.append(other)
    engine.create_adapter(other, BASE, LoraSpec(rank=8, seed=999, train_unembed=False))
    engine.load_state(other, directory, with_optimizer=True)
    assert steps(engine, other, 3, offset=3) == expected


def test_load_after_restart_resumes_exactly(
    engine_dirs: tuple[Path, Path], trained: tuple[str, Path, list[float]]
) -> None:
    _, directory, expected = trained
    data_dir, hub = engine_dirs
    fresh = TorchEngine(data_dir=data_dir, hub_cache=hub, threads=THREADS)
    fresh.start()
    try:
        base, lora = fresh.read_checkpoint_config(directory)
        fresh.create_adapter("restored", base, lora)
        fresh.load_state("restored", directory, with_optimizer=True)
        assert steps(fresh, "restored", 3, offset=3) == expected
    finally:
        fresh.close()


def test_load_without_optimizer_restarts_adam(
    engine: TorchEngine, trained: tuple[str, Path, list[float]], new_id: list[str]
) -> None:
    model_id, directory, expected = trained
    engine.load_state(model_id, directory, with_optimizer=False)
    resumed = steps(engine, model_id, 3, offset=3)
    assert resumed[0] == expected[0]  # same weights
    assert resumed[1:] != expected[1:]  # fresh Adam moments
    # Equal to a twin loaded from weights-only files.
    twin, weights_only = uid(), new_dir(directory.parent)
    new_id.append(twin)
    engine.create_adapter(twin, BASE, SPEC)
    engine.load_state(twin, directory, with_optimizer=False)
    engine.save_sampler_weights(twin, weights_only)
    assert {p.name for p in weights_only.iterdir()} == {ADAPTER_WEIGHTS_FILE, ADAPTER_CONFIG_FILE}
    engine.load_state(twin, weights_only, with_optimizer=False)
    assert steps(engine, twin, 3, offset=3) == resumed
    with pytest.raises(EngineUserError, match="optimizer"):
        engine.load_state(twin, weights_only, with_optimizer=True)


def test_load_rejects_mismatched_adapters(
    engine: TorchEngine, trained: tuple[str, Path, list[float]], new_id: list[str]
) -> None:
    _, directory, _ = trained
    wrong_rank, wrong_targets = uid(), uid()
    new_id.extend([wrong_rank, wrong_targets])
    engine.create_adapter(wrong_rank, BASE, LoraSpec(rank=4, seed=1, train_unembed=False))
    engine.create_adapter(wrong_targets, BASE, LoraSpec(rank=8, seed=1))
    probe = dataset(n=1, seed=5)
    before = engine.forward_backward(wrong_rank, probe, "cross_entropy", {}, forward_only=True)
    with pytest.raises(EngineUserError, match="rank"):
        engine.load_state(wrong_rank, directory, with_optimizer=True)
    with pytest.raises(EngineUserError, match="modules"):
        engine.load_state(wrong_targets, directory, with_optimizer=False)
    after = engine.forward_backward(wrong_rank, probe, "cross_entropy", {}, forward_only=True)
    np.testing.assert_array_equal(before.outputs[0]["logprobs"], after.outputs[0]["logprobs"])
    broken = new_dir(directory.parent)
    (broken / ADAPTER_CONFIG_FILE).write_text("{not json")
    with pytest.raises(EngineUserError, match="config"):
        engine.read_checkpoint_config(broken)


def test_sampler_from_weights_dir_outlives_the_files(
    engine: TorchEngine, trained: tuple[str, Path, list[float]], new_id: list[str]
) -> None:
    model_id, directory, _ = trained
    sampler_dir = new_dir(directory.parent)
    engine.save_sampler_weights(model_id, sampler_dir)
    live, from_files = uid("s"), uid("s")
    new_id.extend([live, from_files])
    engine.create_sampler(live, BASE, from_model_id=model_id)
    engine.create_sampler(from_files, BASE, weights_dir=sampler_dir)
    shutil.rmtree(sampler_dir)
    spec = greedy([5, 6, 7], 8)
    assert (
        engine.sample(from_files, spec).sequences[0].tokens
        == engine.sample(live, spec).sequences[0].tokens
    )


def test_peft_loads_the_checkpoint(
    engine: TorchEngine, engine_dirs: tuple[Path, Path], trained: tuple[str, Path, list[float]]
) -> None:
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    model_id, directory, _ = trained
    engine.load_state(model_id, directory, with_optimizer=False)
    datum = dataset(n=1, length=10, seed=7)[0]
    ours = engine.forward_backward(model_id, [datum], "cross_entropy", {}, forward_only=True)
    _, hub = engine_dirs
    base = AutoModelForCausalLM.from_pretrained(BASE, cache_dir=str(hub), local_files_only=True)
    with pytest.warns(UserWarning, match="tinkex"):  # PEFT ignores our extra config section
        model = peft.PeftModel.from_pretrained(base, str(directory))
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(datum.tokens)[None]).logits[0]
    theirs = torch.log_softmax(logits, -1).gather(
        1, torch.from_numpy(datum.inputs["target_tokens"])[:, None]
    )
    np.testing.assert_allclose(theirs[:, 0].numpy(), ours.outputs[0]["logprobs"], atol=1e-5)
