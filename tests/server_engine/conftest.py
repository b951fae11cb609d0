"""Fixtures of the torch engine tests: one started engine shared by the whole package.

The engine builds the default model into a temporary data directory and publishes it into a
temporary Hugging Face cache, so the tests touch nothing outside ``tmp_path_factory``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tinkex_actors.server.engine_api import LoraSpec
from tinkex_actors.server.engines.torch_engine import TorchEngine

from ._util import BASE

#: Compute threads of every engine in these tests (bit-exact reruns need a fixed count).
THREADS = 1


@pytest.fixture(scope="session")
def engine_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(data_dir, hub_cache)`` of the shared engine."""
    root = tmp_path_factory.mktemp("torch-engine")
    return root / "data", root / "hub"


@pytest.fixture(scope="session")
def engine(engine_dirs: tuple[Path, Path]) -> Iterator[TorchEngine]:
    """A started torch engine serving the default model."""
    data_dir, hub = engine_dirs
    eng = TorchEngine(data_dir=data_dir, hub_cache=hub, threads=THREADS)
    eng.start()
    yield eng
    eng.close()


@pytest.fixture
def adapter(engine: TorchEngine) -> Iterator[str]:
    """A fresh rank-8 adapter (seed 7) on the default model, dropped afterwards."""
    model_id = f"test-{uuid.uuid4().hex[:8]}"
    engine.create_adapter(model_id, BASE, LoraSpec(rank=8, seed=7))
    yield model_id
    engine.drop_adapter(model_id)


@pytest.fixture
def new_id(engine: TorchEngine) -> Iterator[list[str]]:
    """Collects adapter / sampler ids created by a test and drops them afterwards."""
    ids: list[str] = []
    yield ids
    for name in ids:
        engine.drop_adapter(name)
        engine.drop_sampler(name)
