"""The default model ``tinkex/tiny-llama``, built locally and deterministically.

Nothing is downloaded. A byte-level BPE tokenizer is trained with ``tokenizers`` on the
English corpus shipped next to this module (``corpus.txt``: short prose paragraphs and
facts-style sentences), and a small Llama-architecture causal LM is initialized from a fixed
seed (normal(0, 0.02) weights, unit norms: the usual Llama initialization, with no
pre-training). The result is an ordinary Hugging Face model directory:

* ``config.json``, ``generation_config.json``, ``model.safetensors`` (float32);
* ``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json``.

The same recipe gives the same bytes every time. The directory's name is the *revision*: a hash
of the recipe and the corpus, so a changed recipe gets a new directory instead of a stale one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from tinkex_actors._constants import SERVER_DEFAULT_MODEL
from tinkex_actors.server.engines.torch._files import (
    atomic_write_bytes,
    publish_files,
    publish_snapshot,
    ref_file,
    snapshot_dir,
)

__all__ = [
    "BOS_TOKEN",
    "EOS_TOKEN",
    "LIGHT_FILES",
    "MODELS_SUBDIR",
    "MODEL_FILES",
    "PAD_TOKEN",
    "TINY_DIMS",
    "TINY_MODEL_NAME",
    "TinyDims",
    "build_tiny_model",
    "ensure_tiny_model",
    "light_files",
    "publish_light_files",
    "tiny_model_dir",
    "tiny_revision",
]

TINY_MODEL_NAME = SERVER_DEFAULT_MODEL
BOS_TOKEN = "<|begin_of_text|>"
EOS_TOKEN = "<|end_of_text|>"
PAD_TOKEN = "<|pad|>"
#: Special tokens take ids 0, 1, 2 in this order.
_SPECIAL_TOKENS = (BOS_TOKEN, EOS_TOKEN, PAD_TOKEN)
_RECIPE_VERSION = 1
_WEIGHTS_SEED = 20250101
_INIT_STD = 0.02
_CORPUS = "corpus.txt"

#: Files of a complete model directory.
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
)
#: The files :func:`light_files` makes (all but the weights).
LIGHT_FILES = tuple(name for name in MODEL_FILES if name != "model.safetensors")
#: Built models live in ``<data_dir>/<MODELS_SUBDIR>``.
MODELS_SUBDIR = "models"


@dataclass(frozen=True)
class TinyDims:
    """Shape of the default model."""

    vocab_size: int = 2048
    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    max_position_embeddings: int = 512
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5


TINY_DIMS = TinyDims()


def _corpus_bytes() -> bytes:
    return resources.files("tinkex_actors.server.engines.torch").joinpath(_CORPUS).read_bytes()


def tiny_revision(dims: TinyDims = TINY_DIMS) -> str:
    """A 40-hex revision naming this recipe (dims, seeds, corpus): a hub-style commit id."""
    recipe = json.dumps(
        {
            "version": _RECIPE_VERSION,
            "dims": asdict(dims),
            "seed": _WEIGHTS_SEED,
            "std": _INIT_STD,
            "special": _SPECIAL_TOKENS,
        },
        sort_keys=True,
    ).encode()
    return hashlib.sha1(recipe + b"\0" + _corpus_bytes(), usedforsecurity=False).hexdigest()


def _train_tokenizer(dims: TinyDims) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=dims.vocab_size,
        # Every pair may merge: the small corpus then fills the whole vocabulary.
        min_frequency=1,
        special_tokens=list(_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    paragraphs = [p for p in _corpus_bytes().decode().split("\n\n") if p.strip()]
    tokenizer.train_from_iterator(paragraphs, trainer)
    if tokenizer.get_vocab_size() != dims.vocab_size:
        raise RuntimeError(
            f"tokenizer training gave {tokenizer.get_vocab_size()} tokens, "
            f"expected {dims.vocab_size}: the corpus is too small for the vocabulary"
        )
    result: str = tokenizer.to_str()
    return result


def _json_bytes(value: object) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


def _config_dict(dims: TinyDims) -> dict[str, object]:
    # Written by hand (not config.to_json_string()) so the bytes do not depend on the
    # installed transformers version.
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": dims.vocab_size,
        "hidden_size": dims.hidden_size,
        "intermediate_size": dims.intermediate_size,
        "num_hidden_layers": dims.num_hidden_layers,
        "num_attention_heads": dims.num_attention_heads,
        "num_key_value_heads": dims.num_key_value_heads,
        "max_position_embeddings": dims.max_position_embeddings,
        "rope_theta": dims.rope_theta,
        "rms_norm_eps": dims.rms_norm_eps,
        "hidden_act": "silu",
        "initializer_range": _INIT_STD,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": _SPECIAL_TOKENS.index(BOS_TOKEN),
        "eos_token_id": _SPECIAL_TOKENS.index(EOS_TOKEN),
        "pad_token_id": _SPECIAL_TOKENS.index(PAD_TOKEN),
        "use_cache": True,
    }


def _weights_bytes(dims: TinyDims) -> bytes:
    """``model.safetensors`` contents (imports torch)."""
    import torch
    from safetensors.torch import save
    from transformers import LlamaConfig, LlamaForCausalLM

    config_dict = _config_dict(dims)
    config = LlamaConfig(**{k: v for k, v in config_dict.items() if k != "model_type"})
    model = LlamaForCausalLM(config)
    # Our own generator, in parameter order: the weights depend on the seed only, not on the
    # global RNG or on how this transformers version initializes.
    generator = torch.Generator().manual_seed(_WEIGHTS_SEED)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            else:
                param.normal_(0.0, _INIT_STD, generator=generator)
    tensors = {name: t.detach().contiguous() for name, t in model.state_dict().items()}
    weights: bytes = save(tensors, metadata={"format": "pt"})
    return weights


def light_files(dims: TinyDims = TINY_DIMS) -> dict[str, bytes]:
    """Every file of the model but its weights: tokenizer and configs, built without torch.

    Training the tokenizer takes well under a second, so the server publishes these before
    it reports healthy (:meth:`TorchEngine.prepare`).
    """
    specials = {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "pad_token": PAD_TOKEN}
    return {
        "tokenizer.json": _train_tokenizer(dims).encode(),
        "tokenizer_config.json": _json_bytes(
            {
                **specials,
                "tokenizer_class": "PreTrainedTokenizerFast",
                "model_max_length": dims.max_position_embeddings,
                "clean_up_tokenization_spaces": False,
                "add_bos_token": False,
                "add_eos_token": False,
            }
        ),
        "special_tokens_map.json": _json_bytes(specials),
        "config.json": _json_bytes(_config_dict(dims)),
        "generation_config.json": _json_bytes(
            {
                "bos_token_id": _SPECIAL_TOKENS.index(BOS_TOKEN),
                "eos_token_id": _SPECIAL_TOKENS.index(EOS_TOKEN),
                "pad_token_id": _SPECIAL_TOKENS.index(PAD_TOKEN),
            }
        ),
    }


def build_tiny_model(
    directory: Path, dims: TinyDims = TINY_DIMS, *, light: dict[str, bytes] | None = None
) -> None:
    """Write the model's files into ``directory`` (created if missing).

    ``light`` reuses files already made by :func:`light_files` for the same ``dims``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    files = dict(light or light_files(dims))
    files["model.safetensors"] = _weights_bytes(dims)
    for name in MODEL_FILES:
        atomic_write_bytes(directory / name, files[name])


def _complete(directory: Path) -> bool:
    return all((directory / name).is_file() for name in MODEL_FILES)


def tiny_model_dir(cache_root: Path, dims: TinyDims = TINY_DIMS) -> Path:
    """Where :func:`ensure_tiny_model` keeps the built model under ``cache_root``."""
    return cache_root / TINY_MODEL_NAME.replace("/", "--") / tiny_revision(dims)


def publish_light_files(cache_root: Path, hub_cache: Path, dims: TinyDims = TINY_DIMS) -> Path:
    """Put the tokenizer and configs of the default model into the hub cache, without torch.

    Nothing is written when the snapshot already holds them; files of an already built model
    under ``cache_root`` are copied (weights included); otherwise :func:`light_files` makes
    them (~0.1 s). Returns the snapshot directory.
    """
    revision = tiny_revision(dims)
    snapshot = snapshot_dir(hub_cache, TINY_MODEL_NAME, revision)
    ref = ref_file(hub_cache, TINY_MODEL_NAME)
    if (
        all((snapshot / name).is_file() for name in LIGHT_FILES)
        and ref.is_file()
        and ref.read_text().strip() == revision
    ):
        return snapshot
    built = tiny_model_dir(cache_root, dims)
    if _complete(built):
        return publish_snapshot(built, hub_cache, TINY_MODEL_NAME, revision)
    return publish_files(light_files(dims), hub_cache, TINY_MODEL_NAME, revision)


def ensure_tiny_model(cache_root: Path, dims: TinyDims = TINY_DIMS) -> Path:
    """The default model's directory under ``cache_root``, built on first use.

    The build goes to a private temporary directory renamed into place at the end, so two
    processes building at once both end with one complete directory (the loser of the rename
    discards its copy).
    """
    final = tiny_model_dir(cache_root, dims)
    if _complete(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".build-{os.getpid()}-{uuid.uuid4().hex}"
    try:
        build_tiny_model(tmp, dims)
        if final.exists() and not _complete(final):
            # A crashed earlier build left a partial directory: replace it.
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if not _complete(final):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
