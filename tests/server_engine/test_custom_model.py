"""``--model NAME=PATH``: serving a local Hugging Face directory next to the default model."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tinkex_actors.errors import ConfigError
from tinkex_actors.server.engine_api import AdamSpec, LoraSpec
from tinkex_actors.server.engines.torch._tiny_model import tiny_revision
from tinkex_actors.server.engines.torch_engine import TorchEngine

from ._util import BASE, ce_datum, greedy, sequence
from .conftest import THREADS

pytestmark = pytest.mark.torch


def _gpt2_dir(root: Path, tokenizer_from: Path) -> Path:
    """A tiny GPT-2 (Conv1D projections, tied embeddings) saved as a local HF directory."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=2048,
        n_positions=64,
        n_embd=32,
        n_layer=1,
        n_head=2,
        eos_token_id=1,
        bos_token_id=0,
    )
    path = root / "gpt2-tiny"
    GPT2LMHeadModel(config).save_pretrained(path)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tokenizer_from / name, path / name)
    return path


@pytest.fixture(scope="module")
def custom(
    engine_dirs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TorchEngine, Path, Path]]:
    data_dir, _ = engine_dirs
    built = data_dir / "models" / "tinkex--tiny-llama" / tiny_revision()
    root = tmp_path_factory.mktemp("custom-models")
    llama = root / "my-llama"
    shutil.copytree(built, llama)
    gpt2 = _gpt2_dir(root, built)
    eng = TorchEngine(
        data_dir=data_dir,
        models={"local/llama": llama, "local/gpt2": gpt2},
        threads=THREADS,
        publish_to_hub=False,
    )
    eng.start()
    yield eng, llama, gpt2
    eng.close()


def test_served_models(custom: tuple[TorchEngine, Path, Path]) -> None:
    engine, llama, _ = custom
    infos = {info.name: info for info in engine.base_models()}
    assert set(infos) == {BASE, "local/llama", "local/gpt2"}
    assert infos["local/llama"].tokenizer_id == str(llama.resolve())
    assert infos["local/gpt2"].arch == "gpt2"
    assert infos["local/gpt2"].max_context_length == 64
    assert infos["local/gpt2"].eos_token_ids == (1,)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        infos["local/llama"].tokenizer_id, local_files_only=True
    )
    assert tokenizer.eos_token_id == 1


@pytest.mark.parametrize("name", ["local/llama", "local/gpt2"])
def test_train_and_sample_a_local_model(custom: tuple[TorchEngine, Path, Path], name: str) -> None:
    engine = custom[0]
    engine.create_adapter("a", name, LoraSpec(rank=4, seed=0))
    try:
        data = [ce_datum(sequence(i, 12)) for i in range(2)]
        losses = []
        for _ in range(5):
            out = engine.forward_backward("a", data, "cross_entropy", {}, forward_only=False)
            losses.append(out.metrics["loss:sum"])
            engine.optim_step("a", AdamSpec(learning_rate=3e-3))
        assert losses[-1] < losses[0]
        engine.create_sampler("s", name, from_model_id="a")
        seq = engine.sample("s", greedy([5, 6, 7], 4)).sequences[0]
        assert len(seq.tokens) == 4
        assert all(np.isfinite(seq.logprobs))
    finally:
        engine.drop_adapter("a")
        engine.drop_sampler("s")


def test_same_weights_same_numbers(custom: tuple[TorchEngine, Path, Path]) -> None:
    engine = custom[0]
    datum = ce_datum(sequence(3, 10))
    outs = []
    for name in (BASE, "local/llama"):
        engine.create_adapter(name, name, LoraSpec(rank=4, seed=1))
        outs.append(engine.forward_backward(name, [datum], "cross_entropy", {}, forward_only=True))
        engine.drop_adapter(name)
    np.testing.assert_array_equal(outs[0].outputs[0]["logprobs"], outs[1].outputs[0]["logprobs"])


def test_bad_model_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a Hugging Face model directory"):
        TorchEngine(data_dir=tmp_path, models={"x": tmp_path / "missing"})
    with pytest.raises(ConfigError, match="non-empty"):
        TorchEngine(data_dir=tmp_path, models={"": tmp_path})
