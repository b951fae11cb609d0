"""Base models: one frozen causal LM per served name, with its tokenizer and LoRA targets.

A base model is loaded once and shared by every adapter and sampler on it. Its weights never
change: parameters are frozen and the module stays in eval mode (no dropout). LoRA updates are
added by forward hooks (:class:`~._lora.LoraRouter`) on the modules an adapter may target:

* ``attn``: every linear layer under an attention block (Llama: q/k/v/o_proj);
* ``mlp``: every linear layer under an MLP / feed-forward block (Llama: gate/up/down_proj);
* ``unembed``: the output embedding (``lm_head``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tinkex_actors.server.engine_api import BaseModelInfo
from tinkex_actors.server.engines.torch._lora import LoraRouter

__all__ = ["TARGET_GROUPS", "BaseModel", "load_base_model"]

#: Target groups, in the order of LoraSpec's flags.
TARGET_GROUPS = ("attn", "mlp", "unembed")
_ATTN_MARKERS = ("attn", "attention")
_MLP_MARKERS = ("mlp", "ffn", "feed_forward", "feedforward")
#: Used when a config names no context length.
_FALLBACK_CONTEXT = 2048


@dataclass
class BaseModel:
    """A loaded base model and what the engine needs to know about it."""

    info: BaseModelInfo
    model: Any
    #: Module name -> (in_features, out_features) of every LoRA-capable module.
    dims: dict[str, tuple[int, int]]
    #: Target group -> module names, in model order.
    targets: dict[str, tuple[str, ...]]
    router: LoraRouter
    decode: Callable[[Sequence[int]], str]
    #: Name of the KV-cache keyword of ``model.forward`` (``cache`` or ``past_key_values``).
    cache_arg: str
    #: Name of the "logits for the last n positions only" keyword, if the model has one.
    keep_arg: str | None
    #: Where the weights came from (``base_model_name_or_path`` of saved adapters).
    source: str

    def forward(
        self, input_ids: Any, *, cache: Any = None, use_cache: bool = False, last_only: bool = False
    ) -> Any:
        """Run the model; returns its output (``logits`` and, with ``use_cache``, the cache).

        ``cache`` continues an earlier call's cache; ``last_only`` computes logits for the last
        position only.
        """
        kwargs: dict[str, Any] = {"input_ids": input_ids, "use_cache": use_cache}
        if cache is not None:
            kwargs[self.cache_arg] = cache
        if last_only and self.keep_arg is not None:
            kwargs[self.keep_arg] = 1
        return self.model(**kwargs)

    def output_cache(self, output: Any) -> Any:
        """The KV cache of a forward output (the attribute's name changed in transformers 5)."""
        for key in ("cache", "past_key_values"):
            if key in output:
                return output[key]
        raise RuntimeError("the model returned no KV cache")


def _linear_dims(module: Any) -> tuple[int, int] | None:
    if isinstance(module, torch.nn.Linear):
        return int(module.in_features), int(module.out_features)
    # transformers' Conv1D (GPT-2 family): y = x @ W + b with W of shape [in, out].
    if type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None:
        shape = tuple(module.weight.shape)
        if len(shape) == 2:
            return int(shape[0]), int(shape[1])
    return None


def _discover_targets(model: Any) -> tuple[dict[str, tuple[int, int]], dict[str, tuple[str, ...]]]:
    unembed = model.get_output_embeddings()
    dims: dict[str, tuple[int, int]] = {}
    groups: dict[str, list[str]] = {group: [] for group in TARGET_GROUPS}
    for name, module in model.named_modules():
        found = _linear_dims(module)
        if found is None:
            continue
        parts = name.lower().split(".")
        if module is unembed:
            group = "unembed"
        elif any(marker in part for part in parts for marker in _ATTN_MARKERS):
            group = "attn"
        elif any(marker in part for part in parts for marker in _MLP_MARKERS):
            group = "mlp"
        else:
            continue
        dims[name] = found
        groups[group].append(name)
    return dims, {group: tuple(names) for group, names in groups.items()}


def _context_length(config: Any, tokenizer_max: int | None) -> int:
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    if tokenizer_max is not None and 0 < tokenizer_max < 1_000_000:
        return tokenizer_max
    return _FALLBACK_CONTEXT


def _eos_ids(model: Any, tokenizer_eos: int | None) -> tuple[int, ...]:
    for source in (getattr(model, "generation_config", None), model.config):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, int):
            return (value,)
        if isinstance(value, list | tuple) and value:
            return tuple(int(v) for v in value)
    return () if tokenizer_eos is None else (tokenizer_eos,)


def _load_decoder(path: Path) -> tuple[Callable[[Sequence[int]], str], int | None, int | None]:
    """A decode function, the tokenizer's EOS id and its model_max_length (if known)."""
    fast = path / "tokenizer.json"
    if fast.is_file():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(fast))

        def decode_fast(ids: Sequence[int]) -> str:
            text: str = tok.decode(list(ids), skip_special_tokens=False)
            return text

        eos = None
        config = path / "tokenizer_config.json"
        if config.is_file():
            import json

            name = json.loads(config.read_text()).get("eos_token")
            if isinstance(name, dict):
                name = name.get("content")
            eos = tok.token_to_id(name) if isinstance(name, str) else None
        return decode_fast, eos, None
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True)

    def decode_slow(ids: Sequence[int]) -> str:
        text: str = hf.decode(
            list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False
        )
        return text

    return decode_slow, hf.eos_token_id, getattr(hf, "model_max_length", None)


def _keyword(model: Any, *names: str) -> str | None:
    params = inspect.signature(model.forward).parameters
    return next((name for name in names if name in params), None)


def load_base_model(name: str, path: Path, *, tokenizer_id: str) -> BaseModel:
    """Load a Hugging Face causal LM directory (offline) as a frozen float32 base model."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    # The per-tensor loading progress bar would land in the server's stderr.
    hf_logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True)
    model = model.float().eval()
    model.requires_grad_(False)
    decode, tokenizer_eos, tokenizer_max = _load_decoder(path)
    dims, targets = _discover_targets(model)
    vocab = min(
        int(model.get_input_embeddings().weight.shape[0]),
        int(model.get_output_embeddings().weight.shape[0]),
    )
    info = BaseModelInfo(
        name=name,
        tokenizer_id=tokenizer_id,
        vocab_size=vocab,
        max_context_length=_context_length(model.config, tokenizer_max),
        arch=str(getattr(model.config, "model_type", "unknown")),
        eos_token_ids=_eos_ids(model, tokenizer_eos),
    )
    modules = dict(model.named_modules())
    router = LoraRouter({target: modules[target] for target in dims})
    cache_arg = _keyword(model, "cache", "past_key_values")
    if cache_arg is None:
        raise RuntimeError(f"model {name!r} takes no KV cache argument")
    return BaseModel(
        info=info,
        model=model,
        dims=dims,
        targets=targets,
        router=router,
        decode=decode,
        cache_arg=cache_arg,
        keep_arg=_keyword(model, "logits_to_keep", "num_logits_to_keep"),
        source=tokenizer_id,
    )
