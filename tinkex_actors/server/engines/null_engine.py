"""The null engine: the protocol's shapes with instant, plausible numbers and no torch.

It exists for SDK benchmarks, load tests and protocol tests. Every adapter is one scalar
"progress" parameter ``p`` trained with AdamW, so losses fall with steps, checkpoints round-trip
exactly (a save/load leaves the next loss unchanged) and loading without the optimizer state
visibly changes the trajectory. The per-token log-probability of a target token is

    logprob = -(BASE + AMP * exp(-p)) * (1 + JITTER * h(token, position))

with ``AMP = log(vocab_size) - BASE`` (an untrained adapter scores like a uniform guess) and
``h`` a fixed hash in [-0.5, 0.5). Losses follow the formulas of the real losses on those
log-probabilities (``dro`` here: ``-advantage * logprob + beta/2 * (logprob - sampler_logprob)^2``
with ``beta`` from ``loss_fn_config``, default 1).

Sampling draws from a fixed pseudo-random next-token distribution that depends on the previous
token, after temperature, top_k and top_p; the same seed gives the same tokens. The engine has
no tokenizer, so stop *strings* never match; stop token ids and EOS work as in the torch engine
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
    CISPO_CLIP_HIGH,
    CISPO_CLIP_LOW,
    DRO_BETA,
    NULL_ENGINE_CONTEXT_LENGTH,
    NULL_ENGINE_VOCAB_SIZE,
    PPO_CLIP_HIGH,
    PPO_CLIP_LOW,
    SERVER_DEFAULT_MODEL,
)
from tinkex_actors.server.engine_api import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_WEIGHTS_FILE,
    OPTIMIZER_STATE_FILE,
    AdamSpec,
    BaseModelInfo,
    EngineDatum,
    EngineNotFoundError,
    EngineUserError,
    ForwardBackwardResult,
    LoraSpec,
    SampledSeq,
    SampleResult,
    SampleSpec,
)

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["NullEngine"]

_BASE = 0.3
_JITTER = 0.2
#: Scales AdamW's step on the single parameter so that default learning rates move it visibly.
_STEP_SCALE = 1000.0
_EOS_PENALTY = 8.0
_ENGINE_TAG = "tinkex-null"
#: Sampling settings whose cumulative rank-order probabilities are kept (a handful in practice).
_MAX_CUTS = 64


@dataclass
class _Adapter:
    base_model: str
    lora: LoraSpec
    progress: float
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
        logits = np.random.default_rng(20240601).normal(0.0, 2.0, size=vocab_size)
        logits[self._eos] -= _EOS_PENALTY
        shifted = logits - logits.max()
        # The next-token distribution after token t is this one rotated by shift(t): sorting,
        # normalizing and the top_k / top_p cut are done once here (and once per sampling
        # setting), so a sampled token costs one draw, not a pass over the vocabulary.
        self._base_logprobs = shifted - math.log(float(np.exp(shifted).sum()))
        self._rank_order = np.argsort(-self._base_logprobs, kind="stable")
        self._cuts: dict[tuple[float, int, float], npt.NDArray[np.float64]] = {}

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

    def create_adapter(self, model_id: str, base_model: str, lora: LoraSpec) -> None:
        """Create an adapter whose starting point depends on ``lora.seed``."""
        self._check_base(base_model)
        if lora.rank < 1:
            raise EngineUserError(f"lora rank must be at least 1, got {lora.rank}")
        start = ((lora.seed or 0) % 97) / 1000.0
        with self._lock:
            self._adapters[model_id] = _Adapter(base_model=base_model, lora=lora, progress=start)

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
        adapter = self._adapter(model_id)
        with adapter.lock:
            if self._simulate:
                time.sleep(self._simulate)
            outputs: list[dict[str, npt.NDArray[np.generic]]] = []
            total = 0.0
            grad = 0.0
            for datum in data:
                elementwise, logprobs, dloss = self._datum_loss(
                    adapter.progress, datum, loss_fn, loss_fn_config
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
        datum: EngineDatum,
        loss_fn: str,
        config: Mapping[str, float],
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], float]:
        targets = np.asarray(datum.inputs["target_tokens"], dtype=np.int64)
        if targets.ndim > 1:
            targets = targets[:, 0]
        if targets.size and (targets.min() < 0 or targets.max() >= self._vocab):
            raise EngineUserError("target_tokens outside the vocabulary")
        logprobs, dlogprob = self._logprobs(progress, targets)
        n = targets.shape[0]

        def inp(name: str, default: float | None = None) -> npt.NDArray[np.float64]:
            value = datum.inputs.get(name)
            if value is None:
                if default is None:
                    raise EngineUserError(f"loss {loss_fn!r} needs loss_fn_inputs[{name!r}]")
                return np.full(n, default, dtype=np.float64)
            return np.asarray(value, dtype=np.float64).reshape(n, -1)[:, 0]

        if loss_fn == "cross_entropy":
            weights = inp("weights", 1.0)
            elementwise = -logprobs * weights
            dloss_dlogprob = -weights
        else:
            advantages = inp("advantages")
            old = inp("logprobs")
            ratio = np.exp(logprobs - old)
            if loss_fn == "importance_sampling":
                elementwise = -ratio * advantages
                dloss_dlogprob = -ratio * advantages
            elif loss_fn == "ppo":
                low = float(config.get("clip_low_threshold", PPO_CLIP_LOW))
                high = float(config.get("clip_high_threshold", PPO_CLIP_HIGH))
                unclipped = ratio * advantages
                clipped = np.clip(ratio, low, high) * advantages
                elementwise = -np.minimum(unclipped, clipped)
                dloss_dlogprob = np.where(unclipped <= clipped, -unclipped, 0.0)
            elif loss_fn == "cispo":
                low = float(config.get("clip_low_threshold", CISPO_CLIP_LOW))
                high = float(config.get("clip_high_threshold", CISPO_CLIP_HIGH))
                coeff = np.clip(ratio, low, high) * advantages
                elementwise = -coeff * logprobs
                dloss_dlogprob = -coeff
            elif loss_fn == "dro":
                beta = float(config.get("beta", DRO_BETA))
                elementwise = -advantages * logprobs + 0.5 * beta * (logprobs - old) ** 2
                dloss_dlogprob = -advantages + beta * (logprobs - old)
            else:
                raise EngineUserError(f"unknown loss function {loss_fn!r}")
        return elementwise, logprobs, float((dloss_dlogprob * dlogprob).sum())

    def optim_step(self, model_id: str, adam: AdamSpec) -> dict[str, float]:
        """One AdamW step on ``p`` with the accumulated gradient, which is then zeroed."""
        adapter = self._adapter(model_id)
        with adapter.lock:
            if self._simulate:
                time.sleep(self._simulate)
            grad = adapter.grad
            norm = abs(grad)
            if adam.grad_clip_norm > 0 and norm > adam.grad_clip_norm:
                grad *= adam.grad_clip_norm / norm
            adapter.t += 1
            adapter.m = adam.beta1 * adapter.m + (1 - adam.beta1) * grad
            adapter.v = adam.beta2 * adapter.v + (1 - adam.beta2) * grad * grad
            m_hat = adapter.m / (1 - adam.beta1**adapter.t)
            v_hat = adapter.v / (1 - adam.beta2**adapter.t)
            step = adam.learning_rate * _STEP_SCALE
            adapter.progress -= step * m_hat / (math.sqrt(v_hat) + adam.eps)
            adapter.progress -= adam.learning_rate * adam.weight_decay * adapter.progress
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

    def _shift(self, previous: int) -> int:
        return (previous * 7919) % self._vocab

    def sample(self, sampler_id: str, spec: SampleSpec) -> SampleResult:
        """Generate from the simulated distribution; the same seed gives the same tokens."""
        with self._lock:
            if sampler_id not in self._samplers:
                raise EngineNotFoundError(f"no sampler {sampler_id!r}")
        prompt = [int(t) for t in spec.prompt]
        if any(t < 0 or t >= self._vocab for t in prompt):
            raise EngineUserError("prompt token outside the vocabulary")
        rng = np.random.default_rng(spec.seed)
        # As the torch engine: EOS stops unless the stop list is explicitly empty (``stop=[]``)
        # and stop token ids add to it.
        explicit_empty = spec.stop_strings == () or spec.stop_token_ids == ()
        stops = set() if explicit_empty else set(self._info.eos_token_ids)
        stops.update(spec.stop_token_ids or ())
        sequences = [self._generate(prompt, spec, rng, stops) for _ in range(spec.num_samples)]
        result = SampleResult(sequences=sequences)
        if spec.prompt_logprobs or spec.topk_prompt_logprobs:
            self._score_prompt(prompt, spec, result)
        return result

    def _generate(
        self, prompt: list[int], spec: SampleSpec, rng: np.random.Generator, stops: set[int]
    ) -> SampledSeq:
        tokens: list[int] = []
        logprobs: list[float] = []
        previous = prompt[-1] if prompt else 0
        vocab, order, base = self._vocab, self._rank_order, self._base_logprobs
        cdf = self._cdf(spec) if spec.temperature > 0 else None
        for _ in range(spec.max_tokens):
            # What ``rng.choice(len(p), p=p)`` does, without checking ``p`` again every time.
            rank = 0 if cdf is None else int(cdf.searchsorted(rng.random(), side="right"))
            index = int(order[rank])
            token = (index + self._shift(previous)) % vocab
            tokens.append(token)
            logprobs.append(float(base[index]))
            if token in stops:
                return SampledSeq(tokens=tokens, logprobs=logprobs, stop_reason="stop")
            previous = token
        return SampledSeq(tokens=tokens, logprobs=logprobs, stop_reason="length")

    def _cdf(self, spec: SampleSpec) -> npt.NDArray[np.float64]:
        """Cumulative probabilities of the tokens in rank order after temperature, top_k, top_p."""
        key = (spec.temperature, spec.top_k, spec.top_p)
        cdf = self._cuts.get(key)
        if cdf is None:
            scaled = self._base_logprobs[self._rank_order] / spec.temperature
            if spec.top_k > 0:
                scaled = scaled[: spec.top_k]
            probs = np.exp(scaled - scaled[0])
            probs /= probs.sum()
            if spec.top_p < 1.0:
                keep = int(np.searchsorted(np.cumsum(probs), spec.top_p) + 1)
                probs = probs[:keep] / probs[:keep].sum()
            cdf = probs.cumsum()
            cdf /= cdf[-1]
            if len(self._cuts) >= _MAX_CUTS:
                self._cuts.clear()
            self._cuts[key] = cdf
        return cdf

    def _score_prompt(self, prompt: list[int], spec: SampleSpec, result: SampleResult) -> None:
        scores: list[float | None] = [None]
        topk: list[list[tuple[int, float]] | None] = [None]
        vocab, order, base = self._vocab, self._rank_order, self._base_logprobs
        for i in range(1, len(prompt)):
            shift = self._shift(prompt[i - 1])
            scores.append(float(base[(prompt[i] - shift) % vocab]))
            if spec.topk_prompt_logprobs:
                k = min(spec.topk_prompt_logprobs, vocab)
                topk.append([((int(j) + shift) % vocab, float(base[j])) for j in order[:k]])
        if spec.prompt_logprobs:
            result.prompt_logprobs = scores
        if spec.topk_prompt_logprobs:
            result.topk_prompt_logprobs = topk
