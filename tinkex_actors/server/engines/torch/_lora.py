"""LoRA adapters: weights, the hooks that apply them, AdamW, and the checkpoint format.

An adapter is a set of low-rank pairs, one per targeted module: ``A`` of shape ``[rank, in]``
and ``B`` of shape ``[out, rank]``; the module's output becomes ``W x + (alpha / rank) B A x``
with ``alpha`` = :data:`~tinkex_actors._constants.LORA_ALPHA`. ``A`` starts Kaiming-uniform from
a generator seeded with ``LoraSpec.seed`` (as torch initializes ``nn.Linear``), ``B`` starts at
zero, so a fresh adapter leaves the base model's outputs unchanged.

The base model is shared: instead of one injected module per adapter, every candidate module
carries one forward hook (:class:`LoraRouter`) that adds the update of whichever adapter the
engine made *active* for the call. The engine serializes calls, so one active adapter at a time.

Checkpoints use PEFT's file format, so a saved adapter loads with
``peft.PeftModel.from_pretrained(base, directory)``: ``adapter_model.safetensors`` with keys
``base_model.model.<module>.lora_A.weight`` / ``lora_B.weight`` (float32), and
``adapter_config.json`` with PEFT's LoRA fields plus a ``tinkex`` section (base model name,
LoraSpec and optimizer family). The optimizer state (``optimizer.safetensors``) is written by
:mod:`._optim`.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tinkex_actors._constants import LORA_ALPHA
from tinkex_actors.server.engine_api import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_WEIGHTS_FILE,
    OPTIMIZER_FAMILIES,
    AdamSpec,
    DimuonSpec,
    EngineUserError,
    LoraSpec,
    OptimizerSpec,
)
from tinkex_actors.server.engines.torch._optim import (
    new_optimizer,
    optimizer_tensors,
    write_optimizer_file,
)

__all__ = [
    "AdapterTrainer",
    "LoraRouter",
    "LoraWeights",
    "new_seed",
    "read_adapter_config",
    "read_optimizer_spec",
    "read_weights",
    "write_adapter",
]

_KEY_PREFIX = "base_model.model."
_A_SUFFIX = ".lora_A.weight"
_B_SUFFIX = ".lora_B.weight"
_FORMAT_VERSION = 1


@dataclass
class LoraWeights:
    """The low-rank pairs of one adapter, keyed by module name (model order)."""

    rank: int
    pairs: dict[str, tuple[Any, Any]]
    #: Frozen copies only: per module ``(A^T, scale * B^T)``, contiguous, for fewer ops per
    #: call when sampling.
    inference_pairs: dict[str, tuple[Any, Any]] | None = None

    @property
    def scale(self) -> float:
        """``alpha / rank``."""
        return LORA_ALPHA / self.rank

    def tensors(self) -> list[Any]:
        """Every tensor, ``A`` then ``B`` per module, in module order."""
        return [t for pair in self.pairs.values() for t in pair]

    def keyed(self) -> dict[str, Any]:
        """PEFT state-dict keys -> tensors."""
        out: dict[str, Any] = {}
        for name, (a, b) in self.pairs.items():
            out[_KEY_PREFIX + name + _A_SUFFIX] = a
            out[_KEY_PREFIX + name + _B_SUFFIX] = b
        return out

    def snapshot(self) -> LoraWeights:
        """A detached copy that later training does not change."""
        pairs = {n: (a.detach().clone(), b.detach().clone()) for n, (a, b) in self.pairs.items()}
        return LoraWeights(rank=self.rank, pairs=pairs)

    def frozen(self) -> LoraWeights:
        """A detached copy prepared for sampling (it must never be trained)."""
        copy = self.snapshot()
        copy.inference_pairs = {
            name: (a.t().contiguous(), (b.t() * self.scale).contiguous())
            for name, (a, b) in copy.pairs.items()
        }
        return copy

    @classmethod
    def fresh(
        cls, dims: Mapping[str, tuple[int, int]], modules: list[str], rank: int, seed: int
    ) -> LoraWeights:
        """New trainable weights: Kaiming-uniform ``A`` from ``seed``, zero ``B``."""
        generator = torch.Generator().manual_seed(seed)
        pairs: dict[str, tuple[Any, Any]] = {}
        for name in modules:
            fan_in, fan_out = dims[name]
            a = torch.empty(rank, fan_in)
            torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)
            pairs[name] = (a.requires_grad_(True), torch.zeros(fan_out, rank, requires_grad=True))
        return cls(rank=rank, pairs=pairs)


class LoraRouter:
    """Forward hooks that add the active adapter's update to each target module's output."""

    def __init__(self, modules: Mapping[str, Any]) -> None:
        self._active: LoraWeights | None = None
        for name, module in modules.items():
            module.register_forward_hook(self._hook(name))

    def _hook(self, name: str) -> Any:
        def hook(_module: Any, inputs: tuple[Any, ...], output: Any) -> Any:
            active = self._active
            if active is None:
                return None
            pair = active.pairs.get(name)
            if pair is None:
                return None
            x = inputs[0]
            flat_x = x.reshape(-1, x.shape[-1])
            flat_out = output.reshape(-1, output.shape[-1])
            fast = active.inference_pairs
            if fast is not None:
                a_t, b_t = fast[name]
                return torch.addmm(flat_out, flat_x.mm(a_t), b_t).view(output.shape)
            a, b = pair
            low = flat_x.mm(a.t())
            return torch.addmm(flat_out, low, b.t(), alpha=active.scale).view(output.shape)

        return hook

    @contextmanager
    def use(self, weights: LoraWeights | None) -> Iterator[None]:
        """Make ``weights`` (None: the bare base model) active for the enclosed calls."""
        self._active = weights
        try:
            yield
        finally:
            self._active = None


def new_seed() -> int:
    """A random seed for ``LoraSpec.seed=None``."""
    return secrets.randbits(63)


class AdapterTrainer:
    """An adapter's trainable weights, accumulated gradients and optimizer state."""

    def __init__(self, weights: LoraWeights, optimizer: OptimizerSpec | None = None) -> None:
        self.weights = weights
        self.spec = optimizer or OptimizerSpec()
        self.params = weights.tensors()
        # Gradients exist from the start and are zeroed in place, so an optim_step with nothing
        # accumulated is an ordinary step on a zero gradient.
        for p in self.params:
            p.grad = torch.zeros_like(p)
        self.optimizer = new_optimizer(self.spec, self.params, weights.rank)

    def grads(self) -> list[Any]:
        """Copies of the accumulated gradients (to restore after a failed call)."""
        return [p.grad.clone() for p in self.params]

    def restore_grads(self, saved: list[Any]) -> None:
        """Put back gradients saved by :meth:`grads`."""
        with torch.no_grad():
            for p, g in zip(self.params, saved, strict=True):
                p.grad.copy_(g)

    def step(self, params: AdamSpec | DimuonSpec) -> dict[str, float]:
        """One optimizer step with the accumulated gradients, which are then zeroed.

        Raises:
            EngineUserError: ``params`` are another family's (nothing changes).
        """
        self.optimizer.check(params)
        metrics = self.optimizer.step(params)
        torch._foreach_zero_([p.grad for p in self.params])
        return metrics

    def zero_grads(self) -> None:
        """Drop accumulated gradients."""
        torch._foreach_zero_([p.grad for p in self.params])

    def optimizer_tensors(self) -> dict[str, Any]:
        """Optimizer state keyed ``<peft key>.<field>`` (parameters never stepped are absent)."""
        return optimizer_tensors(self.optimizer, self.weights.keyed())

    def load(
        self, weights: Mapping[str, Any], optimizer: Mapping[str, Mapping[str, Any]] | None
    ) -> None:
        """Replace weights (already validated) and the optimizer state (``None``: fresh
        state; else per PEFT key the fields read by ``_optim.read_optimizer_file``)."""
        with torch.no_grad():
            for key, param in self.weights.keyed().items():
                param.copy_(weights[key])
        self.optimizer = new_optimizer(self.spec, self.params, self.weights.rank)
        if optimizer is not None:
            for key, param in self.weights.keyed().items():
                if key in optimizer:
                    self.optimizer.set_state(param, optimizer[key])
        self.zero_grads()


# ------------------------------------------------------------------------------ checkpoints
def _adapter_config(
    weights: LoraWeights,
    *,
    base_model: str,
    source: str,
    lora: LoraSpec,
    optimizer: OptimizerSpec,
) -> dict[str, Any]:
    return {
        # PEFT's LoraConfig fields: PeftModel.from_pretrained(base, directory) loads the files.
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": source,
        "r": weights.rank,
        "lora_alpha": LORA_ALPHA,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "target_modules": sorted(weights.pairs),
        # What the engine needs to rebuild the adapter.
        "tinkex": {
            "format": _FORMAT_VERSION,
            "base_model": base_model,
            "lora": {
                "rank": lora.rank,
                "seed": lora.seed,
                "train_mlp": lora.train_mlp,
                "train_attn": lora.train_attn,
                "train_unembed": lora.train_unembed,
            },
            "optimizer": optimizer.wire(),
        },
    }


def write_adapter(
    directory: Path,
    weights: LoraWeights,
    *,
    base_model: str,
    source: str,
    lora: LoraSpec,
    optimizer: OptimizerSpec,
    optimizer_state: Mapping[str, Any] | None = None,
) -> None:
    """Write adapter weights, config and (when given) optimizer state into ``directory``."""
    tensors = {k: v.detach().contiguous() for k, v in weights.keyed().items()}
    save_file(tensors, str(directory / ADAPTER_WEIGHTS_FILE), metadata={"format": "pt"})
    config = _adapter_config(
        weights, base_model=base_model, source=source, lora=lora, optimizer=optimizer
    )
    (directory / ADAPTER_CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
    if optimizer_state is not None:
        write_optimizer_file(directory, optimizer.type, optimizer_state)


def _read_config(directory: Path) -> dict[str, Any]:
    path = directory / ADAPTER_CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EngineUserError(f"checkpoint config {path.name} unreadable: {exc}") from exc
    if not isinstance(config, dict):
        raise EngineUserError(f"checkpoint config {path.name}: expected a JSON object")
    return config


def read_optimizer_spec(directory: Path) -> OptimizerSpec:
    """The optimizer family recorded in a checkpoint (AdamW for checkpoints without one)."""
    section = _read_config(directory).get("tinkex")
    recorded = section.get("optimizer") if isinstance(section, dict) else None
    if not isinstance(recorded, dict):
        return OptimizerSpec()
    family, version = recorded.get("type"), recorded.get("version")
    if family not in OPTIMIZER_FAMILIES or version not in OPTIMIZER_FAMILIES[str(family)]:
        raise EngineUserError(
            f"checkpoint config {ADAPTER_CONFIG_FILE}: unknown optimizer {recorded!r}"
        )
    return OptimizerSpec(type=str(family), version=version)


def read_adapter_config(directory: Path) -> tuple[str | None, str | None, LoraSpec]:
    """``(tinkex base model, base_model_name_or_path, LoraSpec)`` from a checkpoint."""
    path = directory / ADAPTER_CONFIG_FILE
    config = _read_config(directory)
    try:
        section = config.get("tinkex")
        if isinstance(section, dict):
            spec = section["lora"]
            lora = LoraSpec(
                rank=int(spec["rank"]),
                seed=None if spec.get("seed") is None else int(spec["seed"]),
                train_mlp=bool(spec["train_mlp"]),
                train_attn=bool(spec["train_attn"]),
                train_unembed=bool(spec["train_unembed"]),
            )
            base = section.get("base_model")
        else:
            # A plain PEFT adapter: infer the flags from its target modules.
            targets = [str(t) for t in config.get("target_modules") or []]
            lora = LoraSpec(
                rank=int(config["r"]),
                seed=None,
                train_attn=any("attn" in t or "attention" in t for t in targets),
                train_mlp=any("mlp" in t or "ffn" in t or "feed_forward" in t for t in targets),
                train_unembed=any(t.split(".")[-1] in ("lm_head", "embed_out") for t in targets),
            )
            base = None
        source = config.get("base_model_name_or_path")
    except (KeyError, TypeError, ValueError) as exc:
        raise EngineUserError(f"checkpoint config {path.name} incomplete: {exc!r}") from exc
    return (
        base if isinstance(base, str) else None,
        source if isinstance(source, str) else None,
        lora,
    )


def read_weights(
    directory: Path, dims: Mapping[str, tuple[int, int]], rank: int | None = None
) -> LoraWeights:
    """Adapter weights from ``directory``, copied into memory and checked against ``dims``."""
    path = directory / ADAPTER_WEIGHTS_FILE
    try:
        raw = load_file(str(path))
    except (OSError, ValueError, RuntimeError) as exc:
        raise EngineUserError(f"checkpoint weights {path.name} unreadable: {exc}") from exc
    pairs: dict[str, tuple[Any, Any]] = {}
    found_rank: int | None = None
    for key in sorted(raw):
        if not (key.startswith(_KEY_PREFIX) and key.endswith(_A_SUFFIX)):
            if key.startswith(_KEY_PREFIX) and key.endswith(_B_SUFFIX):
                continue
            raise EngineUserError(f"checkpoint weights: unexpected tensor {key!r}")
        name = key[len(_KEY_PREFIX) : -len(_A_SUFFIX)]
        b_key = _KEY_PREFIX + name + _B_SUFFIX
        if name not in dims or b_key not in raw:
            raise EngineUserError(f"checkpoint weights: module {name!r} is not in the base model")
        fan_in, fan_out = dims[name]
        a, b = raw[key].float(), raw[b_key].float()
        r = int(a.shape[0]) if a.dim() == 2 else -1
        if tuple(a.shape) != (r, fan_in) or tuple(b.shape) != (fan_out, r):
            raise EngineUserError(f"checkpoint weights: module {name!r} has the wrong shape")
        if found_rank is not None and r != found_rank:
            raise EngineUserError("checkpoint weights: modules disagree on the LoRA rank")
        found_rank = r
        pairs[name] = (a.clone(), b.clone())
    if found_rank is None:
        raise EngineUserError("checkpoint weights: no LoRA tensors")
    if rank is not None and found_rank != rank:
        raise EngineUserError(f"checkpoint has LoRA rank {found_rank}, expected {rank}")
    ordered = {name: pairs[name] for name in dims if name in pairs}
    return LoraWeights(rank=found_rank, pairs=ordered)
