"""Compute engines of the embedded server, loaded by name.

``torch`` (real LoRA training, :mod:`tinkex_actors.server.engines.torch_engine`) and ``null``
(simulated numbers, :mod:`tinkex_actors.server.engines.null_engine`). Both are imported lazily,
so choosing ``null`` never imports torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, cast

from tinkex_actors.errors import ConfigError

if TYPE_CHECKING:
    from tinkex_actors.server.engine_api import Engine

__all__ = ["ENGINE_NAMES", "load_engine"]

#: Names accepted by :func:`load_engine` (and ``--engine``).
ENGINE_NAMES = ("torch", "null")


def load_engine(
    name: str,
    *,
    data_dir: Path,
    models: Mapping[str, Path],
    simulate_ms: float,
    threads: int,
) -> Engine:
    """Construct (but do not start) the engine called ``name``.

    Args:
        name: ``"torch"`` or ``"null"``.
        data_dir: the server's data directory (the torch engine keeps its built model there).
        models: extra ``name -> local Hugging Face directory`` models (torch engine only).
        simulate_ms: simulated work per forward_backward / optim_step (null engine only).
        threads: compute threads for the engine (0: the engine's default).

    Raises:
        ConfigError: unknown name, or the engine's module cannot be imported.
    """
    if name == "null":
        from tinkex_actors.server.engines.null_engine import NullEngine

        if models:
            raise ConfigError("models", "the null engine serves only its simulated model")
        return NullEngine(simulate_ms=simulate_ms)
    if name == "torch":
        try:
            module = importlib.import_module("tinkex_actors.server.engines.torch_engine")
        except ImportError as exc:
            raise ConfigError(
                "engine",
                f"the torch engine cannot be imported ({exc}); install the 'server' extra "
                "or run with --engine null",
            ) from exc
        factory = module.TorchEngine
        return cast("Engine", factory(data_dir=data_dir, models=dict(models), threads=threads))
    raise ConfigError("engine", f"unknown engine {name!r}; expected one of {ENGINE_NAMES}")
