"""The torch engine's implementation (wrapped by :class:`~..torch_engine.TorchEngine`).

One :class:`~._base.BaseModel` per served name, one :class:`~._lora.AdapterTrainer` per training
model id, one set of frozen LoRA weights (or none) per sampler. All compute runs under one
lock: the base model is shared and the LoRA router has one active adapter at a time, and on a
small CPU machine serial compute is as fast as interleaved compute anyway.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinkex_actors._logging import get_logger
from tinkex_actors.server.engine_api import (
    AdamSpec,
    BaseModelInfo,
    DimuonSpec,
    EngineDatum,
    EngineNotFoundError,
    EngineUserError,
    ForwardBackwardResult,
    LoraSpec,
    OptimizerSpec,
    SampleResult,
    SampleSpec,
)
from tinkex_actors.server.engines.losses import (
    LossSpec,
    PreparedDatum,
    check_config,
    input_defaults,
    loss_spec,
    prepare_datum,
)
from tinkex_actors.server.engines.torch._base import TARGET_GROUPS, BaseModel, load_base_model
from tinkex_actors.server.engines.torch._files import hub_cache_dir, publish_snapshot
from tinkex_actors.server.engines.torch._lora import (
    AdapterTrainer,
    LoraWeights,
    new_seed,
    read_adapter_config,
    read_optimizer_spec,
    read_weights,
    write_adapter,
)
from tinkex_actors.server.engines.torch._losses import elementwise_loss
from tinkex_actors.server.engines.torch._optim import read_optimizer_file
from tinkex_actors.server.engines.torch._sampling import generate
from tinkex_actors.server.engines.torch._tiny_model import (
    MODELS_SUBDIR,
    TINY_MODEL_NAME,
    ensure_tiny_model,
)

__all__ = ["EngineCore"]

#: Logits held at once by forward_backward (elements): datums are grouped into micro-batches
#: of at most this many padded positions x vocabulary, with gradients accumulated across them.
_LOGITS_BUDGET = 1 << 25


@dataclass
class _Adapter:
    base: BaseModel
    lora: LoraSpec
    trainer: AdapterTrainer


@dataclass
class _Sampler:
    base: BaseModel
    weights: LoraWeights | None


def _check_params(params: AdamSpec | DimuonSpec) -> None:
    checks: tuple[tuple[str, float, bool], ...]
    if isinstance(params, DimuonSpec):
        prefix = "optimizer_params"
        checks = (
            ("learning_rate", params.learning_rate, params.learning_rate >= 0),
            ("beta1", params.beta1, 0 <= params.beta1 < 1),
            ("grad_clip_norm", params.grad_clip_norm, True),
        )
    else:
        prefix = "adam_params"
        checks = (
            ("learning_rate", params.learning_rate, params.learning_rate >= 0),
            ("beta1", params.beta1, 0 <= params.beta1 < 1),
            ("beta2", params.beta2, 0 <= params.beta2 < 1),
            ("eps", params.eps, params.eps > 0),
            ("weight_decay", params.weight_decay, params.weight_decay >= 0),
            ("grad_clip_norm", params.grad_clip_norm, params.grad_clip_norm >= 0),
        )
    for name, value, ok in checks:
        if not (math.isfinite(value) and ok):
            raise EngineUserError(f"{prefix}.{name}: invalid value {value!r}")


def _micro_batches(data: list[PreparedDatum], vocab: int) -> list[list[PreparedDatum]]:
    """Consecutive groups whose padded logits fit the budget (a long datum may stand alone)."""
    budget = max(1, _LOGITS_BUDGET // max(1, vocab))
    groups: list[list[PreparedDatum]] = []
    current: list[PreparedDatum] = []
    longest = 0
    for datum in data:
        length = int(datum.tokens.shape[0])
        if current and (len(current) + 1) * max(longest, length) > budget:
            groups.append(current)
            current, longest = [], 0
        current.append(datum)
        longest = max(longest, length)
    if current:
        groups.append(current)
    return groups


class EngineCore:
    """Base models, adapters and samplers, and the compute on them."""

    def __init__(
        self,
        *,
        data_dir: Path,
        models: Mapping[str, Path],
        threads: int,
        hub_cache: Path | None,
        publish_to_hub: bool,
    ) -> None:
        self._data_dir = data_dir
        self._models = dict(models)
        self._threads = threads
        self._hub_cache = hub_cache
        self._publish = publish_to_hub
        self._lock = threading.RLock()
        self._bases: dict[str, BaseModel] = {}
        self._adapters: dict[str, _Adapter] = {}
        self._samplers: dict[str, _Sampler] = {}

    # ------------------------------------------------------------------ lifecycle
    def load(self) -> None:
        """Build (first time) and load the default model, then the ``models`` directories."""
        log = get_logger("server.torch_engine")
        torch.use_deterministic_algorithms(True, warn_only=True)
        # ... without its NaN-filling of every new tensor (slow, and nothing here reads
        # uninitialized memory).
        torch.utils.deterministic.fill_uninitialized_memory = False
        self._set_threads()
        bases: dict[str, BaseModel] = {}
        if TINY_MODEL_NAME not in self._models:
            path = ensure_tiny_model(self._data_dir / MODELS_SUBDIR)
            if self._publish:
                hub = self._hub_cache or hub_cache_dir()
                try:
                    publish_snapshot(path, hub, TINY_MODEL_NAME, path.name)
                except OSError as exc:
                    log.warning("tinkex.server.hub_cache_unwritable", path=str(hub), error=str(exc))
            bases[TINY_MODEL_NAME] = load_base_model(
                TINY_MODEL_NAME, path, tokenizer_id=TINY_MODEL_NAME
            )
        for name, path in self._models.items():
            resolved = path.expanduser().resolve()
            bases[name] = load_base_model(name, resolved, tokenizer_id=str(resolved))
        with self._lock:
            self._bases = bases
        log.info("tinkex.server.engine_ready", models=sorted(bases))

    def close(self) -> None:
        """Forget adapters, samplers and models."""
        with self._lock:
            self._adapters.clear()
            self._samplers.clear()
            self._bases.clear()

    def base_models(self) -> Sequence[BaseModelInfo]:
        """Served models, in load order."""
        with self._lock:
            return tuple(base.info for base in self._bases.values())

    def _set_threads(self) -> None:
        # Thread count changes float reduction order: pin it for bit-exact reruns.
        if self._threads > 0 and torch.get_num_threads() != self._threads:
            torch.set_num_threads(self._threads)

    # ------------------------------------------------------------------ lookups
    def _base(self, name: str) -> BaseModel:
        with self._lock:
            base = self._bases.get(name)
            served = sorted(self._bases)
        if base is None:
            raise EngineUserError(f"unknown base model {name!r}; this server serves {served}")
        return base

    def _adapter(self, model_id: str) -> _Adapter:
        with self._lock:
            adapter = self._adapters.get(model_id)
        if adapter is None:
            raise EngineNotFoundError(f"no adapter {model_id!r}")
        return adapter

    # ------------------------------------------------------------------ adapters
    def create_adapter(
        self,
        model_id: str,
        base_model: str,
        lora: LoraSpec,
        optimizer: OptimizerSpec | None = None,
    ) -> None:
        """A fresh adapter on ``base_model`` with fresh ``optimizer`` state (None: AdamW)."""
        optimizer = optimizer or OptimizerSpec()
        optimizer.check()
        base = self._base(base_model)
        wanted = dict(
            zip(TARGET_GROUPS, (lora.train_attn, lora.train_mlp, lora.train_unembed), strict=True)
        )
        chosen = {name for group, on in wanted.items() if on for name in base.targets[group]}
        modules = [name for name in base.dims if name in chosen]
        if not modules:
            raise EngineUserError(
                "lora: train_attn, train_mlp and train_unembed select no module of "
                f"{base_model!r}; enable at least one"
            )
        max_rank = max(min(base.dims[name]) for name in modules)
        if not 1 <= lora.rank <= max_rank:
            raise EngineUserError(f"lora.rank: expected 1..{max_rank}, got {lora.rank}")
        seed = new_seed() if lora.seed is None else lora.seed % (1 << 64)
        weights = LoraWeights.fresh(base.dims, modules, lora.rank, seed)
        adapter = _Adapter(base=base, lora=lora, trainer=AdapterTrainer(weights, optimizer))
        with self._lock:
            self._adapters[model_id] = adapter

    def drop_adapter(self, model_id: str) -> None:
        """Forget an adapter (no error when it is already gone)."""
        with self._lock:
            self._adapters.pop(model_id, None)

    def forward_backward(
        self,
        model_id: str,
        data: Sequence[EngineDatum],
        loss_fn: str,
        loss_fn_config: Mapping[str, float],
        *,
        forward_only: bool,
    ) -> ForwardBackwardResult:
        """Per-datum logprobs and elementwise loss; gradients accumulate unless forward_only."""
        spec = loss_spec(loss_fn)
        config = check_config(spec, loss_fn_config)
        if not data:
            raise EngineUserError("data: expected at least one datum")
        adapter = self._adapter(model_id)
        info = adapter.base.info
        prepared = [
            prepare_datum(i, datum, spec, info.vocab_size, info.max_context_length)
            for i, datum in enumerate(data)
        ]
        with self._lock:
            self._set_threads()
            saved = None if forward_only else adapter.trainer.grads()
            try:
                outputs, total = self._run(adapter, prepared, spec, config, forward_only)
            except BaseException:
                if saved is not None:
                    adapter.trainer.restore_grads(saved)
                raise
        return ForwardBackwardResult(outputs=outputs, metrics={"loss:sum": total})

    def _run(
        self,
        adapter: _Adapter,
        data: list[PreparedDatum],
        spec: LossSpec,
        config: Mapping[str, float],
        forward_only: bool,
    ) -> tuple[list[dict[str, Any]], float]:
        base = adapter.base
        vocab = base.info.vocab_size
        outputs: list[dict[str, Any]] = []
        total = 0.0
        defaults = dict.fromkeys(spec.required, 0.0) | input_defaults(spec, config)
        for group in _micro_batches(data, vocab):
            rows, width = len(group), max(int(d.tokens.shape[0]) for d in group)
            ids = np.zeros((rows, width), dtype=np.int64)
            targets = np.zeros((rows, width), dtype=np.int64)
            mask = np.zeros((rows, width), dtype=bool)
            # A datum without an optional input gets its default (weights 1, the config's clip
            # thresholds); padding positions are masked out below whatever they hold.
            extra = {
                key: np.full((rows, width), value, dtype=np.float32)
                for key, value in defaults.items()
            }
            for row, datum in enumerate(group):
                length = int(datum.tokens.shape[0])
                ids[row, :length] = datum.tokens
                targets[row, :length] = datum.targets
                mask[row, :length] = True
                for key, values in datum.inputs.items():
                    extra[key][row, :length] = values
            inputs = {key: torch.from_numpy(value) for key, value in extra.items()}
            valid = torch.from_numpy(mask)
            grad_mode = torch.inference_mode() if forward_only else nullcontext()
            with grad_mode, base.router.use(adapter.trainer.weights):
                logits = base.forward(torch.from_numpy(ids)).logits
                lp = -torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]).float(),
                    torch.from_numpy(targets).reshape(-1),
                    reduction="none",
                ).view(rows, width)
                elementwise = elementwise_loss(spec, lp, inputs, config, valid)
                loss = torch.where(valid, elementwise, 0.0)
                if not forward_only:
                    loss.sum().backward()
            lp_np = lp.detach().numpy()
            loss_np = loss.detach().numpy()
            total += float(loss_np.astype(np.float64).sum())
            for row, datum in enumerate(group):
                length = int(datum.tokens.shape[0])
                outputs.append(
                    {
                        "logprobs": lp_np[row, :length].astype(np.float32),
                        "elementwise_loss": loss_np[row, :length].astype(np.float32),
                    }
                )
        return outputs, total

    def optim_step(self, model_id: str, params: AdamSpec | DimuonSpec) -> dict[str, float]:
        """The adapter's optimizer on the accumulated gradients, then zero them."""
        _check_params(params)
        adapter = self._adapter(model_id)
        with self._lock:
            self._set_threads()
            return adapter.trainer.step(params)

    # ------------------------------------------------------------------ checkpoints
    def save_state(self, model_id: str, directory: Path, *, with_optimizer: bool) -> None:
        """Adapter weights + config (+ optimizer state) into ``directory``."""
        adapter = self._adapter(model_id)
        with self._lock:
            weights = adapter.trainer.weights.snapshot()
            state = adapter.trainer.optimizer_tensors() if with_optimizer else None
        write_adapter(
            directory,
            weights,
            base_model=adapter.base.info.name,
            source=adapter.base.source,
            lora=adapter.lora,
            optimizer=adapter.trainer.spec,
            optimizer_state=state,
        )

    def save_sampler_weights(self, model_id: str, directory: Path) -> None:
        """Adapter weights + config only."""
        self.save_state(model_id, directory, with_optimizer=False)

    def _checkpoint_base(self, directory: Path) -> tuple[BaseModel, LoraSpec]:
        name, source, lora = read_adapter_config(directory)
        with self._lock:
            bases = dict(self._bases)
        if name is None:
            name = next(
                (n for n, b in bases.items() if source in (n, b.source, b.info.tokenizer_id)),
                None,
            )
        if name is None or name not in bases:
            raise EngineUserError(
                f"checkpoint is for base model {name or source!r}, which this server does not "
                f"serve ({sorted(bases)})"
            )
        return bases[name], lora

    def read_checkpoint_config(self, directory: Path) -> tuple[str, LoraSpec]:
        """Base model name and LoraSpec recorded in a checkpoint."""
        base, lora = self._checkpoint_base(directory)
        return base.info.name, lora

    def read_checkpoint_optimizer(self, directory: Path) -> OptimizerSpec:
        """The optimizer family recorded in a checkpoint (AdamW when none is)."""
        return read_optimizer_spec(directory)

    def load_state(self, model_id: str, directory: Path, *, with_optimizer: bool) -> None:
        """Replace an adapter's weights (and optimizer state, or a fresh one) from a checkpoint."""
        adapter = self._adapter(model_id)
        base, _ = self._checkpoint_base(directory)
        if base is not adapter.base:
            raise EngineUserError(
                f"checkpoint is for base model {base.info.name!r}, adapter {model_id!r} uses "
                f"{adapter.base.info.name!r}"
            )
        current = adapter.trainer.weights
        weights = read_weights(directory, base.dims, rank=current.rank)
        if list(weights.pairs) != list(current.pairs):
            raise EngineUserError(
                "checkpoint adapts other modules than this adapter (different train_attn / "
                "train_mlp / train_unembed)"
            )
        optimizer = None
        if with_optimizer:
            shapes = {key: tuple(t.shape) for key, t in current.keyed().items()}
            optimizer = read_optimizer_file(directory, adapter.trainer.spec.type, shapes)
        with self._lock:
            adapter.trainer.load(weights.keyed(), optimizer)

    # ------------------------------------------------------------------ sampling
    def create_sampler(
        self,
        sampler_id: str,
        base_model: str,
        *,
        weights_dir: Path | None = None,
        from_model_id: str | None = None,
    ) -> None:
        """A sampler on the bare base, on weights read into memory, or on a live snapshot."""
        base = self._base(base_model)
        weights: LoraWeights | None = None
        if weights_dir is not None:
            recorded, _ = self._checkpoint_base(weights_dir)
            if recorded is not base:
                raise EngineUserError(
                    f"weights are for base model {recorded.info.name!r}, not {base_model!r}"
                )
            weights = read_weights(weights_dir, base.dims).frozen()
        elif from_model_id is not None:
            adapter = self._adapter(from_model_id)
            if adapter.base is not base:
                raise EngineUserError(
                    f"adapter {from_model_id!r} is on {adapter.base.info.name!r}, "
                    f"not {base_model!r}"
                )
            with self._lock:
                weights = adapter.trainer.weights.frozen()
        with self._lock:
            self._samplers[sampler_id] = _Sampler(base=base, weights=weights)

    def drop_sampler(self, sampler_id: str) -> None:
        """Forget a sampler (no error when it is already gone)."""
        with self._lock:
            self._samplers.pop(sampler_id, None)

    def sample(self, sampler_id: str, spec: SampleSpec) -> SampleResult:
        """Generate ``spec.num_samples`` sequences."""
        with self._lock:
            sampler = self._samplers.get(sampler_id)
            if sampler is None:
                raise EngineNotFoundError(f"no sampler {sampler_id!r}")
            self._set_threads()
            return generate(sampler.base, sampler.weights, spec)
