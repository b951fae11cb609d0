"""TorchEngine.prepare: the tokenizer reaches the hub cache before the server reports healthy."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tinkex_actors.server.engines.torch._files import ref_file, snapshot_dir
from tinkex_actors.server.engines.torch._tiny_model import LIGHT_FILES, light_files, tiny_revision
from tinkex_actors.server.engines.torch_engine import TorchEngine

from ._util import BASE

pytestmark = pytest.mark.torch


def test_prepare_publishes_the_built_models_files_without_torch(
    engine: TorchEngine, engine_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    """In a fresh process (no torch imported), prepare() writes the same tokenizer and configs
    as the full build, in a fresh cache and a fresh data directory."""
    del engine  # built the reference copy
    data_dir, _ = engine_dirs
    reference = data_dir / "models" / BASE.replace("/", "--") / tiny_revision()
    hub, fresh_data = tmp_path / "hub", tmp_path / "data"
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from tinkex_actors.server.engines.torch_engine import TorchEngine
        TorchEngine(data_dir=Path({str(fresh_data)!r}), hub_cache=Path({str(hub)!r})).prepare()
        assert "torch" not in sys.modules, "prepare() imported torch"
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    snapshot = snapshot_dir(hub, BASE, tiny_revision())
    assert sorted(p.name for p in snapshot.iterdir()) == sorted(LIGHT_FILES)
    for name in LIGHT_FILES:
        assert (snapshot / name).read_bytes() == (reference / name).read_bytes(), name
    assert ref_file(hub, BASE).read_text() == tiny_revision()
    assert not fresh_data.exists() or not any(fresh_data.iterdir())


def test_prepare_copies_an_already_built_model(
    engine: TorchEngine, engine_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    del engine
    data_dir, _ = engine_dirs
    TorchEngine(data_dir=data_dir, hub_cache=tmp_path).prepare()
    snapshot = snapshot_dir(tmp_path, BASE, tiny_revision())
    assert (snapshot / "model.safetensors").is_file()  # copied, not rebuilt
    assert (snapshot / "tokenizer.json").read_bytes() == light_files()["tokenizer.json"]


def test_prepare_skips_a_replaced_default_model_and_disabled_publishing(tmp_path: Path) -> None:
    TorchEngine(data_dir=tmp_path / "d", hub_cache=tmp_path / "hub", publish_to_hub=False).prepare()
    assert not (tmp_path / "hub").exists()


def test_prepare_reports_an_unwritable_cache_without_raising(tmp_path: Path) -> None:
    blocker = tmp_path / "hub"
    blocker.write_text("a file where the cache directory should be")
    TorchEngine(data_dir=tmp_path / "d", hub_cache=blocker).prepare()
    assert blocker.read_text().startswith("a file")
