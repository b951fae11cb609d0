"""The contract between the embedded server's HTTP layer and its compute engines.

The HTTP layer (``tinkex_actors.server.app`` and friends) owns the protocol: sessions,
futures, idempotency, per-model ``seq_id`` ordering, persistence, auth. An :class:`Engine`
owns the numbers: base models, LoRA adapters, losses, optimizer state, sampling. Two engines
implement it: ``torch`` (real LoRA training with torch + transformers + peft) and ``null``
(instant plausible answers, no torch import, for SDK benchmarks and load tests).

Threading: the HTTP layer calls an engine from worker threads. It never runs two calls for the
same ``model_id`` at once and runs them in ``seq_id`` order; calls for different models may
arrive concurrently, so an engine that shares state (one base model) serializes internally.

Errors: an engine raises :class:`EngineUserError` for input the caller got wrong (the HTTP
layer reports it as a failed request of category ``user``, or a 400 when it can tell before
queueing) and :class:`EngineNotFoundError` for an unknown adapter or sampler. Anything else
is a server fault (category ``server``). A failing call leaves the engine's state as it was.

Nothing here imports torch or numpy at module import time, so the null engine and the HTTP
layer start fast.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "ADAPTER_CONFIG_FILE",
    "ADAPTER_WEIGHTS_FILE",
    "OPTIMIZER_STATE_FILE",
    "OPTIMIZER_FAMILIES",
    "AdamSpec",
    "BaseModelInfo",
    "DimuonSpec",
    "Engine",
    "EngineDatum",
    "EngineError",
    "EngineNotFoundError",
    "EngineUserError",
    "ForwardBackwardResult",
    "LoraSpec",
    "OptimizerSpec",
    "SampleResult",
    "SampleSpec",
    "SampledSeq",
]

#: Files of a saved checkpoint directory (training state or sampler weights).
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG_FILE = "adapter_config.json"
OPTIMIZER_STATE_FILE = "optimizer.safetensors"


class EngineError(Exception):
    """Base class of engine failures."""


class EngineUserError(EngineError, ValueError):
    """The request's input is wrong (out-of-vocabulary token, mismatched lengths, ...)."""


class EngineNotFoundError(EngineError, LookupError):
    """No adapter or sampler with that id."""


@dataclass(frozen=True)
class BaseModelInfo:
    """A base model the engine serves."""

    name: str
    #: What get_info reports as ``model_data.tokenizer_id``; must load offline.
    tokenizer_id: str
    vocab_size: int
    max_context_length: int
    arch: str = "llama"
    #: Token ids that end a sequence when ``stop`` is not given.
    eos_token_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class LoraSpec:
    """LoRA adapter settings (wire ``LoraConfig``)."""

    rank: int = 32
    seed: int | None = None
    train_mlp: bool = True
    train_attn: bool = True
    train_unembed: bool = True


@dataclass(frozen=True)
class AdamSpec:
    """AdamW hyper-parameters (wire ``AdamParams``); ``grad_clip_norm`` 0 disables clipping."""

    learning_rate: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-12
    weight_decay: float = 0.0
    grad_clip_norm: float = 0.0


@dataclass(frozen=True)
class DimuonSpec:
    """Dimuon step hyper-parameters (wire ``DimuonParams``); ``grad_clip_norm`` <= 0 disables
    clipping."""

    learning_rate: float
    grad_clip_norm: float = 0.0
    beta1: float = 0.9


#: Optimizer families an adapter can be created with, and the versions each accepts.
OPTIMIZER_FAMILIES: Mapping[str, tuple[int | None, ...]] = {"adamw": (None,), "dimuon": (1,)}


@dataclass(frozen=True)
class OptimizerSpec:
    """The optimizer family an adapter is created with (wire ``OptimizerConfig``).

    It is fixed for the adapter's life: every optim_step must carry that family's parameters
    (:class:`AdamSpec` for ``adamw``, :class:`DimuonSpec` for ``dimuon``), and a checkpoint
    saved with its optimizer state only loads back into an adapter of the same family.
    """

    type: str = "adamw"
    version: int | None = None

    def wire(self) -> dict[str, object]:
        """The JSON form: ``{"type": "adamw"}`` or ``{"type": "dimuon", "version": 1}``."""
        out: dict[str, object] = {"type": self.type}
        if self.version is not None:
            out["version"] = self.version
        return out

    def check(self) -> None:
        """EngineUserError unless this names a known family and version."""
        versions = OPTIMIZER_FAMILIES.get(self.type)
        if versions is None or self.version not in versions:
            raise EngineUserError(
                f"optimizer_config: unknown optimizer {self.wire()}; expected "
                "{'type': 'adamw'} or {'type': 'dimuon', 'version': 1}"
            )

    def accepts(self, params: AdamSpec | DimuonSpec) -> bool:
        """Whether ``params`` are this family's step parameters."""
        wanted = AdamSpec if self.type == "adamw" else DimuonSpec
        return isinstance(params, wanted)


@dataclass
class EngineDatum:
    """One training example, decoded from JSON or protobuf by the HTTP layer.

    ``tokens`` is the model input (text chunks concatenated; the HTTP layer rejects image
    chunks for text-only models). ``inputs`` maps loss input names (``target_tokens``,
    ``weights``, ``logprobs``, ``advantages``, ...) to dense arrays; int64 or float32.
    """

    tokens: npt.NDArray[np.int64]
    inputs: dict[str, npt.NDArray[np.generic]]


@dataclass
class ForwardBackwardResult:
    """Per-datum outputs (in request order) and ``name:reduction`` metrics."""

    outputs: list[dict[str, npt.NDArray[np.generic]]]
    metrics: dict[str, float]
    loss_fn_output_type: str = "ArrayRecord"


@dataclass(frozen=True)
class SampleSpec:
    """One asample request, validated by the HTTP layer."""

    prompt: Sequence[int]
    max_tokens: int
    num_samples: int = 1
    temperature: float = 1.0
    top_k: int = -1
    top_p: float = 1.0
    seed: int | None = None
    #: ``None``: stop at EOS. ``()``: never stop early (not even at EOS).
    stop_strings: tuple[str, ...] | None = None
    stop_token_ids: tuple[int, ...] | None = None
    prompt_logprobs: bool = False
    topk_prompt_logprobs: int = 0
    #: ``k``: per generated token, the ``k`` most likely ``(token_id, logprob)`` pairs.
    topk_sample_logprobs: int = 0
    #: int64 ``[len(prompt) - 1, K]``: token ids to score at prompt positions 1.., ``-1`` for
    #: none (a sparse request arrives expanded, unlisted cells ``-1``).
    target_prompt_logprobs: npt.NDArray[np.int64] | None = None
    #: ``k``: draws from the next-token distribution at every prompt position after the first.
    prompt_alt_tokens_k: int = 0


@dataclass
class SampledSeq:
    """One generated sequence (``topk_logprobs``: one row per token when requested)."""

    tokens: list[int]
    logprobs: list[float]
    stop_reason: Literal["stop", "length"]
    topk_logprobs: list[list[tuple[int, float]]] | None = None


@dataclass
class SampleResult:
    """Generated sequences plus the optional prompt scores.

    ``prompt_logprobs`` has one entry per prompt token (``None`` for the first, which has no
    context). ``topk_prompt_logprobs`` has one row per prompt token (``None`` for the first),
    each row up to ``k`` ``(token_id, logprob)`` pairs, best first. Row ``i`` of
    ``target_prompt_logprobs`` and ``prompt_alt_tokens`` belongs to prompt position ``i + 1``.
    """

    sequences: list[SampledSeq]
    prompt_logprobs: list[float | None] | None = None
    topk_prompt_logprobs: list[list[tuple[int, float]] | None] | None = None
    prompt_cache_hit_tokens: int = 0
    #: float32, the request's ``[len(prompt) - 1, K]`` shape: the logprob of each requested id
    #: at its prompt position, 0.0 where the request had ``-1``.
    target_prompt_logprobs: npt.NDArray[np.float32] | None = None
    #: ``(tokens int64, logprobs float32)``, both ``[len(prompt) - 1, k]``.
    prompt_alt_tokens: tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]] | None = None
    #: Set by the HTTP layer when the request's target ids came sparse: ``(crow_indices,
    #: col_indices)``, so ``target_prompt_logprobs`` is encoded in the same CSR layout.
    target_prompt_csr: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]] | None = None
    extra: dict[str, object] = field(default_factory=dict)


class Engine(Protocol):
    """What the HTTP layer needs from a compute engine."""

    #: ``"torch"`` or ``"null"``.
    name: str

    def prepare(self) -> None:
        """Cheap set-up the server runs before it reports healthy (well under a second, no
        heavy imports): e.g. publishing a tokenizer clients load right after start-up."""
        ...

    def start(self) -> None:
        """Load heavy dependencies and base models. Called once, from a background thread;
        the server answers healthz before it returns, and queues engine work until it does."""
        ...

    def close(self) -> None:
        """Release resources (called at server shutdown)."""
        ...

    def base_models(self) -> Sequence[BaseModelInfo]:
        """The models this engine serves (after :meth:`start`)."""
        ...

    # ---------------------------------------------------------------- training adapters
    def create_adapter(
        self,
        model_id: str,
        base_model: str,
        lora: LoraSpec,
        optimizer: OptimizerSpec | None = None,
    ) -> None:
        """Create a fresh LoRA adapter (deterministic from ``lora.seed``) with fresh state of
        ``optimizer`` (None: AdamW). Raises EngineUserError for an unknown base model, a bad
        rank or an unknown optimizer family."""
        ...

    def drop_adapter(self, model_id: str) -> None:
        """Forget an adapter and its optimizer state (unload_model)."""
        ...

    def forward_backward(
        self,
        model_id: str,
        data: Sequence[EngineDatum],
        loss_fn: str,
        loss_fn_config: Mapping[str, float],
        *,
        forward_only: bool,
    ) -> ForwardBackwardResult:
        """Run the loss; unless ``forward_only``, accumulate gradients for the next
        :meth:`optim_step`. Outputs carry at least ``logprobs`` (float32, one per target
        token) per datum; metrics carry at least ``loss:sum``."""
        ...

    def optim_step(self, model_id: str, params: AdamSpec | DimuonSpec) -> dict[str, float]:
        """Apply the accumulated gradients with the adapter's optimizer, then zero them.
        Raises EngineUserError when ``params`` belong to another family. Returns metrics."""
        ...

    def save_state(self, model_id: str, directory: Path, *, with_optimizer: bool) -> None:
        """Write the adapter (``ADAPTER_WEIGHTS_FILE`` + ``ADAPTER_CONFIG_FILE``) and, when
        asked, the optimizer state (``OPTIMIZER_STATE_FILE``) into an existing empty directory.
        The config file records base model and LoRA settings so a later load can rebuild it."""
        ...

    def load_state(self, model_id: str, directory: Path, *, with_optimizer: bool) -> None:
        """Replace an existing adapter's weights (and optimizer state when asked) with a saved
        checkpoint. Training continued after save/load must match training without the round
        trip exactly. Loading optimizer state of another family is an EngineUserError."""
        ...

    def read_checkpoint_config(self, directory: Path) -> tuple[str, LoraSpec]:
        """Base model name and LoRA settings recorded in a checkpoint directory."""
        ...

    def read_checkpoint_optimizer(self, directory: Path) -> OptimizerSpec:
        """The optimizer family recorded in a checkpoint (AdamW when none is recorded)."""
        ...

    def save_sampler_weights(self, model_id: str, directory: Path) -> None:
        """Write the adapter weights only (no optimizer state), for sampling."""
        ...

    # ---------------------------------------------------------------- sampling
    def create_sampler(
        self,
        sampler_id: str,
        base_model: str,
        *,
        weights_dir: Path | None = None,
        from_model_id: str | None = None,
    ) -> None:
        """Make a sampler: the bare base model, adapter weights read from ``weights_dir`` (copied
        into memory, so deleting the files later leaves the sampler working), or a snapshot
        of a live training adapter's current weights."""
        ...

    def drop_sampler(self, sampler_id: str) -> None:
        """Forget a sampler."""
        ...

    def sample(self, sampler_id: str, spec: SampleSpec) -> SampleResult:
        """Generate ``spec.num_samples`` sequences. The same ``seed`` gives the same output."""
        ...
