"""The null engine: the protocol's shapes with instant, plausible numbers and no torch.

It exists for SDK benchmarks, load tests and protocol tests. Every adapter is one scalar
"progress" parameter ``p`` trained with AdamW, so losses fall with steps, checkpoints round-trip
exactly (a save/load leaves the next loss unchanged) and loading without the optimizer state
visibly changes the trajectory. The per-token log-probability of a target token is

    logprob = -(BASE + AMP * exp(-p)) * (1 + JITTER * h(token, position))

with ``AMP = log(vocab_size) - BASE`` (an untrained adapter scores like a uniform guess) and
``h`` a fixed hash in [-0.5, 0.5). Every loss of the registry
(:mod:`tinkex_actors.server.engines.losses`) runs on those log-probabilities with the same
names, inputs, config and validation as the torch engine; ``p`` follows the registry's
analytic gradient. The optimizer is AdamW or Dimuon (on one scalar: momentum, then a step of
``learning_rate`` along its sign), as chosen at creation.

Sampling draws from a fixed pseudo-random next-token distribution that depends on the previous
token (see :mod:`._null_sampler`); the same seed gives the same tokens. The engine has no
tokenizer, so stop *strings* never match; stop token ids and EOS work as in the torch engine
(EOS stops unless the stop list is explicitly empty; stop token ids add to it).

``simulate_ms`` adds that much sleep to every forward_backward and optim_step, serialized per
model, for pipelining benchmarks.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors.numpy import load_file, save_file

from tinkex_actors._constants import (
    NULL_ENGINE_CONTEXT_LENGTH,
    NULL_ENGINE_VOCAB_SIZE,
    SERVER_DEFAULT_MODEL,
)
from tinkex_actors.server.engine_api import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_WEIGHTS_FILE,
    OPTIMIZER_FAMILIES,
    OPTIMIZER_STATE_FILE,
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
from tinkex_actors.server.engines._null_sampler import NullSampler
from tinkex_actors.server.engines.losses import (
    NUMPY_OPS,
    LossSpec,
    PreparedDatum,
    check_config,
    input_defaults,
    loss_spec,
    prepare_datum,
)

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["NullEngine"]

_BASE = 0.3
_JITTER = 0.2
#: Scales the optimizer's step on the single parameter so that default learning rates move it
#: visibly.
_STEP_SCALE = 1000.0
_ENGINE_TAG = "tinkex-null"
_NAMES = {"adamw": "AdamW", "dimuon": "Dimuon"}


@dataclass
class _Adapter:
    base_model: str
    lora: LoraSpec
    progress: float
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    m: float = 0.0
    v: float = 0.0
    t: int = 0
    grad: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class _Sampler:
    base_model: str
    progress: float


class NullEngine:
    """An :class:`~tinkex_actors.server.engine_api.Engine` with simulated numbers.

    Args:
        vocab_size: vocabulary of the simulated base model.
        simulate_ms: sleep per forward_backward and optim_step, serialized per model.
        base_model: name of the simulated base model.
        max_context_length: context length reported for it.
    """

    name = "null"

    def __init__(
        self,
        *,
        vocab_size: int = NULL_ENGINE_VOCAB_SIZE,
        simulate_ms: float = 0.0,
        base_model: str = SERVER_DEFAULT_MODEL,
        max_context_length: int = NULL_ENGINE_CONTEXT_LENGTH,
    ) -> None:
        if vocab_size < 8:
            raise ValueError(f"vocab_size must be at least 8, got {vocab_size}")
        self._vocab = vocab_size
        self._simulate = max(0.0, simulate_ms) / 1000.0
        self._eos = 1  # as in the torch engine's tiny model (BOS 0, EOS 1, PAD 2)
        self._info = BaseModelInfo(
            name=base_model,
            tokenizer_id=base_model,
            vocab_size=vocab_size,
            max_context_length=max_context_length,
            arch="llama",
            eos_token_ids=(self._eos,),
        )
        self._amp = math.log(vocab_size) - _BASE
        self._lock = threading.Lock()
        self._adapters: dict[str, _Adapter] = {}
        self._samplers: dict[str, _Sampler] = {}
        self._sampler = NullSampler(vocab_size, self._eos)

    # ------------------------------------------------------------------ lifecycle
    def prepare(self) -> None:
        """Nothing to publish (the null engine has no tokenizer)."""

    def start(self) -> None:
        """Nothing to load."""

    def close(self) -> None:
        """Forget every adapter and sampler."""
        with self._lock:
            self._adapters.clear()
            self._samplers.clear()

    def base_models(self) -> Sequence[BaseModelInfo]:
        """The one simulated base model."""
        return (self._info,)

    # ------------------------------------------------------------------ adapters
    def _check_base(self, base_model: str) -> None:
        if base_model != self._info.name:
            raise EngineUserError(
                f"unknown base model {base_model!r}; this server serves {self._info.name!r}"
            )

    def _adapter(self, model_id: str) -> _Adapter:
        with self._lock:
            adapter = self._adapters.get(model_id)
        if adapter is None:
            raise EngineNotFoundError(f"no adapter {model_id!r}")
        return adapter

    def create_adapter(
        self,
        model_id: str,
        base_model: str,
        lora: LoraSpec,
        optimizer: OptimizerSpec | None = None,
    ) -> None:
        """Create an adapter whose starting point depends on ``lora.seed``."""
        self._check_base(base_model)
        optimizer = optimizer or OptimizerSpec()
        optimizer.check()
        if lora.rank < 1:
            raise EngineUserError(f"lora rank must be at least 1, got {lora.rank}")
        start = ((lora.seed or 0) % 97) / 1000.0
        adapter = _Adapter(base_model=base_model, lora=lora, progress=start, optimizer=optimizer)
        with self._lock:
            self._adapters[model_id] = adapter

    def drop_adapter(self, model_id: str) -> None:
        """Forget an adapter."""
        with self._lock:
            self._adapters.pop(model_id, None)

    def _logprobs(
        self, progress: float, targets: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Log-probabilities of ``targets`` and their derivative by ``progress``."""
        pos = np.arange(targets.shape[0], dtype=np.int64)
        jitter = ((targets * 2654435761 + pos * 40503) % 1000) / 1000.0 - 0.5
        factor = 1.0 + _JITTER * jitter
        decay = self._amp * math.exp(-progress)
        logprobs = -(_BASE + decay) * factor
        return logprobs, decay * factor

    def forward_backward(
        self,
        model_id: str,
        data: Sequence[EngineDatum],
        loss_fn: str,
        loss_fn_config: Mapping[str, float],
        *,
        forward_only: bool,
    ) -> ForwardBackwardResult:
        """Score the data; unless ``forward_only``, accumulate the gradient of ``p``."""
        spec = loss_spec(loss_fn)
        config = check_config(spec, loss_fn_config)
        if not data:
            raise EngineUserError("data: expected at least one datum")
        info = self._info
        prepared = [
            prepare_datum(i, datum, spec, info.vocab_size, info.max_context_length)
            for i, datum in enumerate(data)
        ]
        adapter = self._adapter(model_id)
        defaults = input_defaults(spec, config)
        with adapter.lock:
            if self._simulate:
                time.sleep(self._simulate)
            outputs: list[dict[str, npt.NDArray[np.generic]]] = []
            total = 0.0
            grad = 0.0
            for datum in prepared:
                elementwise, logprobs, dloss = self._datum_loss(
                    adapter.progress, datum, spec, config, defaults
                )
                total += float(elementwise.sum())
                grad += dloss
                outputs.append(
                    {
                        "logprobs": logprobs.astype(np.float32),
                        "elementwise_loss": elementwise.astype(np.float32),
                    }
                )
            if not forward_only:
                adapter.grad += grad
        return ForwardBackwardResult(outputs=outputs, metrics={"loss:sum": total})

    def _datum_loss(
        self,
        progress: float,
        datum: PreparedDatum,
        spec: LossSpec,
        config: Mapping[str, float],
        defaults: Mapping[str, float],
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], float]:
        logprobs, dlogprob = self._logprobs(progress, datum.targets)
        n = logprobs.shape[0]
        inputs = {key: np.full(n, value) for key, value in defaults.items()}
        inputs.update({key: value.astype(np.float64) for key, value in datum.inputs.items()})
        mask = np.ones(n)
        elementwise = spec.elementwise(NUMPY_OPS, logprobs, inputs, config, mask)
        dloss_dlogprob = spec.gradient(logprobs, inputs, config, mask)
        return elementwise, logprobs, float((dloss_dlogprob * dlogprob).sum())

    def optim_step(self, model_id: str, params: AdamSpec | DimuonSpec) -> dict[str, float]:
        """One step of the adapter's optimizer on ``p`` with the accumulated gradient, which
        is then zeroed."""
        adapter = self._adapter(model_id)
        if not adapter.optimizer.accepts(params):
            family = adapter.optimizer.type
            raise EngineUserError(
                f"optim_step: this model was created with the {_NAMES[family]} optimizer "
                f"({family}); send its parameters, not {type(params).__name__}"
            )
        with adapter.lock:
            if self._simulate:
                time.sleep(self._simulate)
            grad = adapter.grad
            norm = abs(grad)
            if params.grad_clip_norm > 0 and norm > params.grad_clip_norm:
                grad *= params.grad_clip_norm / norm
            adapter.t += 1
            adapter.m = params.beta1 * adapter.m + (1 - params.beta1) * grad
            step = params.learning_rate * _STEP_SCALE
            if isinstance(params, DimuonSpec):
                # The matrix sign of a 1x1 momentum is its sign.
                adapter.progress -= step * float(np.sign(adapter.m))
            else:
                adapter.v = params.beta2 * adapter.v + (1 - params.beta2) * grad * grad
                m_hat = adapter.m / (1 - params.beta1**adapter.t)
                v_hat = adapter.v / (1 - params.beta2**adapter.t)
                adapter.progress -= step * m_hat / (math.sqrt(v_hat) + params.eps)
                adapter.progress -= params.learning_rate * params.weight_decay * adapter.progress
            adapter.grad = 0.0
        return {"grad_norm:mean": norm}

    # ------------------------------------------------------------------ checkpoints
    def _config(self, adapter: _Adapter) -> dict[str, Any]:
        lora = adapter.lora
        return {
            "engine": _ENGINE_TAG,
            "base_model_name_or_path": adapter.base_model,
            "r": lora.rank,
            "seed": lora.seed,
            "train_mlp": lora.train_mlp,
            "train_attn": lora.train_attn,
            "train_unembed": lora.train_unembed,
            "optimizer": adapter.optimizer.wire(),
        }

    def save_state(self, model_id: str, directory: Path, *, with_optimizer: bool) -> None:
        """Write ``p`` (and the AdamW moments) as safetensors plus a JSON config."""
        adapter = self._adapter(model_id)
        with adapter.lock:
            self._write_weights(adapter, directory)
            if with_optimizer:
                save_file(
                    {
                        "m": np.array([adapter.m]),
                        "v": np.array([adapter.v]),
                        "t": np.array([adapter.t], dtype=np.int64),
                    },
                    str(directory / OPTIMIZER_STATE_FILE),
                    metadata={"optimizer": adapter.optimizer.type},
                )

    def _write_weights(self, adapter: _Adapter, directory: Path) -> None:
        save_file({"progress": np.array([adapter.progress])}, str(directory / ADAPTER_WEIGHTS_FILE))
        (directory / ADAPTER_CONFIG_FILE).write_text(json.dumps(self._config(adapter)))

    def save_sampler_weights(self, model_id: str, directory: Path) -> None:
        """Write ``p`` only."""
        adapter = self._adapter(model_id)
        with adapter.lock:
            self._write_weights(adapter, directory)

    @staticmethod
    def _read_progress(directory: Path) -> float:
        try:
            return float(load_file(str(directory / ADAPTER_WEIGHTS_FILE))["progress"][0])
        except Exception as exc:  # safetensors raises its own error type for corrupt files
            raise EngineUserError(f"checkpoint weights unreadable: {exc}") from exc

    def load_state(self, model_id: str, directory: Path, *, with_optimizer: bool) -> None:
        """Replace ``p`` (and the moments when asked; otherwise they restart from zero)."""
        adapter = self._adapter(model_id)
        base, _ = self.read_checkpoint_config(directory)
        if base != adapter.base_model:
            raise EngineUserError(
                f"checkpoint is for base model {base!r}, adapter uses {adapter.base_model!r}"
            )
        progress = self._read_progress(directory)
        m, v, t = 0.0, 0.0, 0
        if with_optimizer:
            saved = self.read_checkpoint_optimizer(directory).type
            if saved != adapter.optimizer.type:
                raise EngineUserError(
                    f"checkpoint holds {_NAMES[saved]} ({saved}) optimizer state but this model "
                    f"uses {_NAMES[adapter.optimizer.type]} ({adapter.optimizer.type})"
                )
            try:
                state = load_file(str(directory / OPTIMIZER_STATE_FILE))
                m, v, t = float(state["m"][0]), float(state["v"][0]), int(state["t"][0])
            except Exception as exc:  # safetensors raises its own error type for corrupt files
                raise EngineUserError(f"checkpoint has no usable optimizer state: {exc}") from exc
        with adapter.lock:
            adapter.progress, adapter.m, adapter.v, adapter.t = progress, m, v, t
            adapter.grad = 0.0

    def read_checkpoint_config(self, directory: Path) -> tuple[str, LoraSpec]:
        """Base model and LoRA settings from ``adapter_config.json``."""
        try:
            config = json.loads((directory / ADAPTER_CONFIG_FILE).read_text())
            lora = LoraSpec(
                rank=int(config["r"]),
                seed=config.get("seed"),
                train_mlp=bool(config.get("train_mlp", True)),
                train_attn=bool(config.get("train_attn", True)),
                train_unembed=bool(config.get("train_unembed", True)),
            )
            return str(config["base_model_name_or_path"]), lora
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise EngineUserError(f"checkpoint config unreadable: {exc}") from exc

    def read_checkpoint_optimizer(self, directory: Path) -> OptimizerSpec:
        """The optimizer family recorded in ``adapter_config.json`` (AdamW when none is)."""
        try:
            recorded = json.loads((directory / ADAPTER_CONFIG_FILE).read_text()).get("optimizer")
        except (OSError, ValueError, AttributeError) as exc:
            raise EngineUserError(f"checkpoint config unreadable: {exc}") from exc
        if recorded is None:
            return OptimizerSpec()
        family = recorded.get("type") if isinstance(recorded, dict) else None
        version = recorded.get("version") if isinstance(recorded, dict) else None
        if family not in OPTIMIZER_FAMILIES or version not in OPTIMIZER_FAMILIES[str(family)]:
            raise EngineUserError(f"checkpoint config: unknown optimizer {recorded!r}")
        return OptimizerSpec(type=str(family), version=version)

    # ------------------------------------------------------------------ sampling
    def create_sampler(
        self,
        sampler_id: str,
        base_model: str,
        *,
        weights_dir: Path | None = None,
        from_model_id: str | None = None,
    ) -> None:
        """Make a sampler from the base model, saved weights or a live adapter."""
        self._check_base(base_model)
        progress = 0.0
        if weights_dir is not None:
            progress = self._read_progress(weights_dir)
        elif from_model_id is not None:
            progress = self._adapter(from_model_id).progress
        with self._lock:
            self._samplers[sampler_id] = _Sampler(base_model=base_model, progress=progress)

    def drop_sampler(self, sampler_id: str) -> None:
        """Forget a sampler."""
        with self._lock:
            self._samplers.pop(sampler_id, None)

    def sample(self, sampler_id: str, spec: SampleSpec) -> SampleResult:
        """Generate from the simulated distribution; the same seed gives the same tokens."""
        with self._lock:
            if sampler_id not in self._samplers:
                raise EngineNotFoundError(f"no sampler {sampler_id!r}")
        prompt = [int(t) for t in spec.prompt]
        if any(t < 0 or t >= self._vocab for t in prompt):
            raise EngineUserError("prompt token outside the vocabulary")
        targets = spec.target_prompt_logprobs
        if targets is not None and (
            targets.ndim != 2
            or targets.shape[0] != len(prompt) - 1
            or (targets.size and (targets.min() < -1 or targets.max() >= self._vocab))
        ):
            raise EngineUserError(
                f"target_prompt_logprobs: expected ids in [-1, {self._vocab}) of shape "
                f"[{len(prompt) - 1}, K]"
            )
        # As the torch engine: EOS stops unless the stop list is explicitly empty (``stop=[]``)
        # and stop token ids add to it.
        explicit_empty = spec.stop_strings == () or spec.stop_token_ids == ()
        stops = set() if explicit_empty else set(self._info.eos_token_ids)
        stops.update(spec.stop_token_ids or ())
        return self._sampler.sample(prompt, spec, stops)
