"""The torch engine: real LoRA training and sampling with torch + transformers.

:class:`TorchEngine` implements :class:`~tinkex_actors.server.engine_api.Engine`. Importing this
module is cheap: torch and transformers (several seconds to import) load in :meth:`start`,
which the server runs on a background thread while it already answers healthz.

It serves the default model ``tinkex/tiny-llama`` (built locally on first start, see
``docs/server-engine.md``) plus any local Hugging Face causal-LM directory given as
``models={"name": path}`` (``--model NAME=PATH``). The implementation lives in
:mod:`tinkex_actors.server.engines.torch`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tinkex_actors._constants import SERVER_DEFAULT_MODEL
from tinkex_actors._logging import get_logger
from tinkex_actors.errors import ConfigError
from tinkex_actors.server.engine_api import (
    AdamSpec,
    BaseModelInfo,
    DimuonSpec,
    EngineDatum,
    EngineError,
    ForwardBackwardResult,
    LoraSpec,
    OptimizerSpec,
    SampleResult,
    SampleSpec,
)

if TYPE_CHECKING:
    from tinkex_actors.server.engines.torch._core import EngineCore

__all__ = ["TorchEngine", "default_threads"]

#: Compute threads used for ``threads=0``: all cores up to this many (the tiny model gains
#: nothing from more).
_MAX_DEFAULT_THREADS = 4


def default_threads() -> int:
    """The thread count ``threads=0`` stands for on this machine."""
    return max(1, min(_MAX_DEFAULT_THREADS, os.cpu_count() or 1))


class TorchEngine:
    """LoRA training and sampling on local models (torch, CPU).

    Args:
        data_dir: where the built default model is cached (``<data_dir>/models``).
        models: extra models to serve, ``name -> local Hugging Face directory`` (a causal LM
            with its tokenizer); each reports its absolute path as ``tokenizer_id``. A model
            named ``tinkex/tiny-llama`` replaces the built default.
        threads: torch compute threads (0: :func:`default_threads`, all cores up to 4).
            Results are bit-for-bit reproducible for a given thread count.
        hub_cache: Hugging Face hub cache to publish the default model into (default: resolved
            from ``HF_HUB_CACHE`` / ``HF_HOME`` / ``XDG_CACHE_HOME`` at start).
        publish_to_hub: write the default model into the hub cache so that
            ``AutoTokenizer.from_pretrained("tinkex/tiny-llama")`` works offline.

    Raises:
        ConfigError: a ``models`` entry has an empty name or is not a model directory.
    """

    name = "torch"

    def __init__(
        self,
        *,
        data_dir: Path,
        models: Mapping[str, Path] | None = None,
        threads: int = 1,
        hub_cache: Path | None = None,
        publish_to_hub: bool = True,
    ) -> None:
        models = dict(models or {})
        for model_name, path in models.items():
            if not model_name or model_name != model_name.strip():
                raise ConfigError("models", f"model name {model_name!r} must be non-empty")
            if not (Path(path).expanduser() / "config.json").is_file():
                raise ConfigError(
                    "models",
                    f"{model_name}={path}: not a Hugging Face model directory (no config.json)",
                )
        if threads < 0:
            raise ConfigError("threads", f"expected >= 0, got {threads}")
        self._data_dir = Path(data_dir)
        self._models = {k: Path(v) for k, v in models.items()}
        self._threads = threads or default_threads()
        self._hub_cache = hub_cache
        self._publish = publish_to_hub
        self._core: EngineCore | None = None

    def _ready(self) -> EngineCore:
        core = self._core
        if core is None:
            raise EngineError("the torch engine has not been started (or was closed)")
        return core

    def prepare(self) -> None:
        """Publish the default model's tokenizer and configs into the hub cache, without torch.

        The server runs this before it reports healthy, so a client may load the
        ``tinkex/tiny-llama`` tokenizer (``Tokenizer.get``, ``AutoTokenizer``) as soon as
        ``/healthz`` answers. It takes well under a second: the tokenizer is trained from the
        shipped corpus (or copied from the built model). :meth:`start` publishes the weights
        later. Does nothing when ``models`` replaces the default model or ``publish_to_hub`` is
        false; an unwritable cache is logged, not raised.
        """
        if not self._publish or SERVER_DEFAULT_MODEL in self._models:
            return
        from tinkex_actors.server.engines.torch._files import hub_cache_dir
        from tinkex_actors.server.engines.torch._tiny_model import (
            MODELS_SUBDIR,
            publish_light_files,
        )

        hub = self._hub_cache or hub_cache_dir()
        try:
            publish_light_files(self._data_dir / MODELS_SUBDIR, hub)
        except OSError as exc:
            get_logger("server.torch_engine").warning(
                "tinkex.server.hub_cache_unwritable", path=str(hub), error=str(exc)
            )

    def start(self) -> None:
        """Import torch, build the default model on first use, load every base model.

        Before torch is first imported in the process, ``OMP_WAIT_POLICY`` defaults to
        ``PASSIVE``: idle OpenMP workers then sleep instead of spinning, which keeps a
        multi-threaded engine fast when clients or other processes share the cores (spinning
        workers competing for two cores made training steps ten times slower).
        """
        if "torch" not in sys.modules:
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from tinkex_actors.server.engines.torch._core import EngineCore

        core = EngineCore(
            data_dir=self._data_dir,
            models=self._models,
            threads=self._threads,
            hub_cache=self._hub_cache,
            publish_to_hub=self._publish,
        )
        core.load()
        self._core = core

    def close(self) -> None:
        """Drop models, adapters and samplers."""
        core, self._core = self._core, None
        if core is not None:
            core.close()

    def base_models(self) -> Sequence[BaseModelInfo]:
        """The served models (after :meth:`start`)."""
        return self._ready().base_models()

    def create_adapter(
        self,
        model_id: str,
        base_model: str,
        lora: LoraSpec,
        optimizer: OptimizerSpec | None = None,
    ) -> None:
        """A fresh LoRA adapter (deterministic from ``lora.seed``) with fresh state of
        ``optimizer`` (None: AdamW; or Dimuon)."""
        self._ready().create_adapter(model_id, base_model, lora, optimizer)

    def drop_adapter(self, model_id: str) -> None:
        """Forget an adapter and its optimizer state."""
        self._ready().drop_adapter(model_id)

    def forward_backward(
        self,
        model_id: str,
        data: Sequence[EngineDatum],
        loss_fn: str,
        loss_fn_config: Mapping[str, float],
        *,
        forward_only: bool,
    ) -> ForwardBackwardResult:
        """Per-datum ``logprobs`` / ``elementwise_loss`` and ``loss:sum``; accumulates
        gradients for the next :meth:`optim_step` unless ``forward_only``."""
        return self._ready().forward_backward(
            model_id, data, loss_fn, loss_fn_config, forward_only=forward_only
        )

    def optim_step(self, model_id: str, params: AdamSpec | DimuonSpec) -> dict[str, float]:
        """One step of the adapter's optimizer on the accumulated gradients, which are then
        zeroed (``params`` of the other family: EngineUserError)."""
        return self._ready().optim_step(model_id, params)

    def save_state(self, model_id: str, directory: Path, *, with_optimizer: bool) -> None:
        """Write the adapter (PEFT format) and, when asked, the optimizer state."""
        self._ready().save_state(model_id, directory, with_optimizer=with_optimizer)

    def load_state(self, model_id: str, directory: Path, *, with_optimizer: bool) -> None:
        """Replace the adapter's weights (and optimizer state when asked; else a fresh one)."""
        self._ready().load_state(model_id, directory, with_optimizer=with_optimizer)

    def read_checkpoint_config(self, directory: Path) -> tuple[str, LoraSpec]:
        """Base model name and LoRA settings recorded in a checkpoint."""
        return self._ready().read_checkpoint_config(directory)

    def read_checkpoint_optimizer(self, directory: Path) -> OptimizerSpec:
        """The optimizer family recorded in a checkpoint (AdamW when none is)."""
        return self._ready().read_checkpoint_optimizer(directory)

    def save_sampler_weights(self, model_id: str, directory: Path) -> None:
        """Write the adapter weights only."""
        self._ready().save_sampler_weights(model_id, directory)

    def create_sampler(
        self,
        sampler_id: str,
        base_model: str,
        *,
        weights_dir: Path | None = None,
        from_model_id: str | None = None,
    ) -> None:
        """A sampler on the base model, on saved weights (copied into memory) or on a
        snapshot of a live adapter."""
        self._ready().create_sampler(
            sampler_id, base_model, weights_dir=weights_dir, from_model_id=from_model_id
        )

    def drop_sampler(self, sampler_id: str) -> None:
        """Forget a sampler."""
        self._ready().drop_sampler(sampler_id)

    def sample(self, sampler_id: str, spec: SampleSpec) -> SampleResult:
        """Generate ``spec.num_samples`` sequences; the same seed gives the same output."""
        return self._ready().sample(sampler_id, spec)
