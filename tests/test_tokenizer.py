"""Tokenizer: id resolution, offline-first loading (local path, HF cache), caching, threads.

Small tokenizers are trained here with the ``tokenizers`` library and laid out like the
Hugging Face hub cache in a temporary directory; the last test loads the torch engine's own
model tokenizer from the cache the embedded server publishes it to.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _servers import ServerHandle
from rest._helpers import Seeder
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from tinkex_actors._constants import NULL_ENGINE_VOCAB_SIZE, SERVER_DEFAULT_MODEL
from tinkex_actors.errors import TokenizerError, ValidationError
from tinkex_actors.futures import ActorFuture
from tinkex_actors.tokenizer import Tokenizer, TokenizerHandle, resolve_tokenizer_id
from tinkex_actors.types import GetInfoResponse, ModelData, ModelInput

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "tinkex trains small adapters on a tiny model",
    "hello world, hello tokenizer",
] * 20


def _byte_bpe(vocab_size: int = 300) -> HFTokenizer:
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def _word_level() -> HFTokenizer:
    tok = HFTokenizer(models.WordLevel({"hello": 0, "world": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def _publish(hub: Path, repo: str, tok: HFTokenizer, revision: str, *, main: bool = True) -> Path:
    repo_dir = hub / ("models--" + repo.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / revision
    snapshot.mkdir(parents=True)
    tok.save(str(snapshot / "tokenizer.json"))
    if main:
        (repo_dir / "refs").mkdir(exist_ok=True)
        (repo_dir / "refs" / "main").write_text(revision)
    return snapshot


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty hub cache as $HF_HUB_CACHE, offline; the handle cache is cleared around."""
    root = tmp_path / "hub"
    root.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    Tokenizer.clear_cache()
    yield root
    Tokenizer.clear_cache()


def _repo() -> str:
    return f"acme/tok-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------------------- resolution
@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("meta-llama/Llama-3.1-8B", "thinkingmachineslabinc/meta-llama-3-tokenizer"),
        ("meta-llama/Llama-3.2-1B-Instruct:rev7", "thinkingmachineslabinc/meta-llama-3-tokenizer"),
        ("meta-llama/Llama-2-7b", "meta-llama/Llama-2-7b"),
        ("Qwen/Qwen3-8B:abc:def", "Qwen/Qwen3-8B"),
        ("org/model/variant", "org/model"),
        ("org/model/variant/extra", "org/model"),
        ("gpt2", "gpt2"),
        ("tinkex/tiny-llama", "tinkex/tiny-llama"),
    ],
)
def test_tokenizer_id_from_model_name(model: str, expected: str) -> None:
    assert resolve_tokenizer_id(model) == expected
    assert Tokenizer.resolve_tokenizer_id(model) == expected


class _InfoClient:
    """What Tokenizer needs of a TrainingClient: ``get_info()`` (a future of GetInfoResponse)."""

    def __init__(self, tokenizer_id: str | None, model_name: str | None) -> None:
        self.info = GetInfoResponse(
            model_id="m", model_data=ModelData(model_name=model_name, tokenizer_id=tokenizer_id)
        )

    def get_info(self) -> ActorFuture[GetInfoResponse]:
        return ActorFuture.completed(self.info)


def test_tokenizer_id_precedence() -> None:
    with_id = _InfoClient("acme/from-info", "meta-llama/Llama-3.1-8B")
    without_id = _InfoClient(None, "meta-llama/Llama-3.1-70B:x")
    assert resolve_tokenizer_id("x/y", training_client=with_id) == "acme/from-info"
    assert resolve_tokenizer_id("x/y", tokenizer_id="explicit/id", training_client=with_id) == (
        "explicit/id"
    )
    # No tokenizer_id from get_info: its model name is mapped.
    assert resolve_tokenizer_id("x/y", training_client=without_id) == (
        "thinkingmachineslabinc/meta-llama-3-tokenizer"
    )
    for bad in ("", "   ", None, 3):
        with pytest.raises(ValidationError) as info:
            resolve_tokenizer_id(bad)  # type: ignore[arg-type]
        assert info.value.field == "model_name"
    with pytest.raises(ValidationError) as info:
        resolve_tokenizer_id("m", tokenizer_id="")
    assert info.value.field == "tokenizer_id"


# ---------------------------------------------------------------------------- loading
def test_loads_from_hub_cache_and_caches(hub: Path) -> None:
    repo = _repo()
    _publish(hub, repo, _byte_bpe(), "a" * 40)
    handle = Tokenizer.get(repo)
    assert isinstance(handle, TokenizerHandle)
    assert handle.tokenizer_id == repo
    assert handle.source.endswith("tokenizer.json")
    ids = handle.encode("hello wörld")
    assert ids
    assert all(isinstance(i, int) for i in ids)
    assert handle.decode(ids) == "hello wörld"
    assert Tokenizer.get(f"{repo}/variant") is handle  # same id, same cached handle
    assert Tokenizer.encode("hello wörld", repo) == ids
    assert Tokenizer.encode_text("hello wörld", repo) == ids
    assert Tokenizer.decode(ids, repo) == "hello wörld"
    assert Tokenizer.decode(np.asarray(ids, dtype=np.int64), repo) == "hello wörld"
    assert repo in Tokenizer.cached_ids()
    assert repr(handle) == f"TokenizerHandle(tokenizer_id={repo!r}, vocab_size={handle.vocab_size})"


def test_refs_main_picks_the_snapshot(hub: Path) -> None:
    repo = _repo()
    _publish(hub, repo, _word_level(), "b" * 40, main=False)
    _publish(hub, repo, _byte_bpe(), "c" * 40)  # refs/main -> this one
    assert Tokenizer.get(repo).source.endswith(f"{'c' * 40}/tokenizer.json")
    # Without refs/main, any snapshot holding a tokenizer is used.
    other = _repo()
    _publish(hub, other, _word_level(), "d" * 40, main=False)
    assert Tokenizer.encode("hello world", other) == [0, 1]


def test_hf_home_and_local_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    Tokenizer.clear_cache()
    repo = _repo()
    _publish(tmp_path / "home" / "hub", repo, _word_level(), "e" * 40)
    assert Tokenizer.encode("hello world", repo) == [0, 1]
    directory = tmp_path / "local-model"
    directory.mkdir()
    _byte_bpe().save(str(directory / "tokenizer.json"))
    local = str(directory)
    ids = Tokenizer.encode("fox", "any/model", tokenizer_id=local)
    assert Tokenizer.decode(ids, "any/model", tokenizer_id=local) == "fox"
    as_file = str(directory / "tokenizer.json")
    assert Tokenizer.get("m", tokenizer_id=as_file).source == as_file
    Tokenizer.clear_cache()


def test_missing_tokenizer_offline(hub: Path) -> None:
    repo = _repo()
    with pytest.raises(TokenizerError) as info:
        Tokenizer.get(repo)
    message = str(info.value)
    assert repr(repo) in message
    assert str(hub) in message
    assert "HF_HUB_OFFLINE" in message
    # Failures are not cached: once the tokenizer appears, it loads.
    _publish(hub, repo, _word_level(), "f" * 40)
    assert Tokenizer.encode("world", repo) == [1]


def test_local_only_never_asks_the_hub(hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    repo = _repo()
    with pytest.raises(TokenizerError, match="local_only, so the hub was not asked"):
        Tokenizer.get(repo, local_only=True)
    _publish(hub, repo, _word_level(), "5" * 40)
    assert Tokenizer.load(repo, local_only=True).encode("hello") == [0]


def test_unusable_tokenizers(hub: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    with pytest.raises(TokenizerError, match=r"no tokenizer\.json"):
        Tokenizer.get("m", tokenizer_id=str(empty))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(TokenizerError, match="cannot load"):
        Tokenizer.get("m", tokenizer_id=str(broken))
    with pytest.raises(TokenizerError, match="neither an existing local path nor a hub id"):
        Tokenizer.get("m", tokenizer_id="/no/such/dir/tok")


def test_bad_text_and_ids(hub: Path) -> None:
    repo = _repo()
    _publish(hub, repo, _word_level(), "1" * 40)
    handle = Tokenizer.get(repo)
    with pytest.raises(ValidationError) as info:
        handle.encode(b"bytes")  # type: ignore[arg-type]
    assert info.value.field == "text"
    for ids, field in (([0, 99], "ids[1]"), ([0, -1], "ids[1]"), ([True], "ids[0]"),
                       (["1"], "ids[0]"), ("01", "ids"), (5, "ids")):  # fmt: skip
        with pytest.raises(ValidationError) as info:
            handle.decode(ids)
        assert info.value.field == field


def test_concurrent_first_use_and_sharing(hub: Path) -> None:
    repo = _repo()
    _publish(hub, repo, _byte_bpe(), "2" * 40)
    texts = [f"the quick brown fox number {i} says hello" for i in range(50)]
    handles: list[TokenizerHandle] = []
    results: list[list[tuple[list[int], str]]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work() -> None:
        try:
            start.wait(10)
            handle = Tokenizer.get(repo)
            handles.append(handle)
            out = []
            for _ in range(5):
                for text in texts:
                    ids = handle.encode(text)
                    out.append((ids, handle.decode(ids)))
            results.append(out)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, name=f"tok-{i}") for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(handles) == 8
    assert all(h is handles[0] for h in handles)
    expected = [(handles[0].encode(t), t) for t in texts] * 5
    assert all(r == expected for r in results)


# ---------------------------------------------------------------------------- ModelInput
def test_model_input_from_text(hub: Path) -> None:
    bpe, words = _repo(), _repo()
    _publish(hub, bpe, _byte_bpe(), "3" * 40)
    _publish(hub, words, _word_level(), "4" * 40)
    model_input = ModelInput.from_text("hello tokenizer", model_name=bpe)
    assert model_input.to_ints() == Tokenizer.encode("hello tokenizer", bpe)
    assert ModelInput.from_text_strict("hello tokenizer", bpe) == model_input
    assert ModelInput.from_text("", bpe) == ModelInput.from_ints([])
    with pytest.raises(ValidationError, match="no tokens"):
        ModelInput.from_text_strict("", bpe)
    # A lossy tokenization ([UNK]) is accepted by from_text, refused by from_text_strict.
    assert ModelInput.from_text("hello there", words).to_ints() == [0, 2]
    with pytest.raises(ValidationError, match="does not survive tokenization") as info:
        ModelInput.from_text_strict("hello there", words)
    assert info.value.field == "text"
    with pytest.raises(TokenizerError):
        ModelInput.from_text("hi", model_name=_repo())
    with pytest.raises(TokenizerError):
        ModelInput.from_text_strict("hi", model_name=_repo())
    client = _InfoClient(bpe, "whatever/model")
    assert ModelInput.from_text("fox", "x/y", training_client=client) == ModelInput.from_ints(
        Tokenizer.encode("fox", bpe)
    )


# ---------------------------------------------------------------------------- the real model
@pytest.mark.torch
def test_torch_engine_model_tokenizer(torch_server: ServerHandle) -> None:
    # The torch server publishes tinkex/tiny-llama into this process's HF_HOME hub cache.
    seeder = Seeder(torch_server)
    try:
        model_id = seeder.model(seeder.session())
        info: dict[str, Any] = seeder.post("/get_info", {"model_id": model_id})
    finally:
        seeder.close()
    tokenizer_id = info["model_data"]["tokenizer_id"]
    assert tokenizer_id == SERVER_DEFAULT_MODEL
    Tokenizer.clear_cache()
    handle = Tokenizer.get(SERVER_DEFAULT_MODEL, tokenizer_id=tokenizer_id)
    assert handle.vocab_size == NULL_ENGINE_VOCAB_SIZE
    text = "The quick brown fox jumps over the lazy dog."
    ids = handle.encode(text)
    assert 0 < len(ids) < len(text)
    assert handle.decode(ids) == text
    assert ModelInput.from_text_strict(text, SERVER_DEFAULT_MODEL).to_ints() == ids
