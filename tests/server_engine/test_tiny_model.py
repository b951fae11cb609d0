"""The built default model: deterministic bytes, atomic concurrent builds, hub-cache layout."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tinkex_actors.server.engines.torch._files import hub_cache_dir, snapshot_dir
from tinkex_actors.server.engines.torch._tiny_model import (
    MODEL_FILES,
    TINY_DIMS,
    ensure_tiny_model,
    tiny_revision,
)
from tinkex_actors.server.engines.torch_engine import TorchEngine

from ._util import BASE, EOS, VOCAB

pytestmark = pytest.mark.torch


def test_reported_model(engine: TorchEngine) -> None:
    (info,) = engine.base_models()
    assert info.name == info.tokenizer_id == BASE
    assert info.vocab_size == VOCAB == TINY_DIMS.vocab_size
    assert info.max_context_length == TINY_DIMS.max_position_embeddings
    assert info.arch == "llama"
    assert info.eos_token_ids == (EOS,)


def test_concurrent_builds_give_one_identical_copy(
    engine: TorchEngine, engine_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    del engine  # built the reference copy
    data_dir, _ = engine_dirs
    reference = data_dir / "models" / BASE.replace("/", "--") / tiny_revision()
    results: list[Path] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            results.append(ensure_tiny_model(tmp_path))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=build, name=f"build-{i}") for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    assert len(results) == 2
    assert results[0] == results[1]
    # Only the final directory is left: no temporary build directories or files.
    assert [p.name for p in (tmp_path / "tinkex--tiny-llama").iterdir()] == [tiny_revision()]
    assert sorted(p.name for p in results[0].iterdir()) == sorted(MODEL_FILES)
    for name in MODEL_FILES:
        assert (results[0] / name).read_bytes() == (reference / name).read_bytes(), name


def test_hub_cache_loads_offline(engine: TorchEngine, engine_dirs: tuple[Path, Path]) -> None:
    del engine
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    _, hub = engine_dirs
    revision = tiny_revision()
    repo = hub / "models--tinkex--tiny-llama"
    assert (repo / "refs" / "main").read_text() == revision
    snapshot = snapshot_dir(hub, BASE, revision)
    assert {p.name for p in snapshot.iterdir()} == set(MODEL_FILES)
    tokenizer = AutoTokenizer.from_pretrained(BASE, cache_dir=str(hub), local_files_only=True)
    assert len(tokenizer) == VOCAB
    assert tokenizer.eos_token == "<|end_of_text|>"
    assert tokenizer.eos_token_id == EOS
    ids = tokenizer.encode("The capital of France is Paris.")
    assert ids == [403, 293, 267, 926, 262, 1502, 16]  # no BOS added; whole words from the corpus
    assert tokenizer.decode(ids) == "The capital of France is Paris."
    raw = Tokenizer.from_file(str(snapshot / "tokenizer.json"))
    assert raw.encode("Hello, world!\n").ids == tokenizer.encode("Hello, world!\n")


def test_hub_cache_resolution() -> None:
    assert hub_cache_dir({"HF_HUB_CACHE": "/a", "HF_HOME": "/b"}) == Path("/a")
    assert hub_cache_dir({"HUGGINGFACE_HUB_CACHE": "/c"}) == Path("/c")
    assert hub_cache_dir({"HF_HOME": "/b", "XDG_CACHE_HOME": "/x"}) == Path("/b/hub")
    assert hub_cache_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/huggingface/hub")
    assert hub_cache_dir({}) == Path("~/.cache/huggingface/hub").expanduser()
