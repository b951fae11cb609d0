"""``python -m tinkex_actors.demo --fast``: the whole demo job, with fewer steps."""

from __future__ import annotations

import io
import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tinkex_actors.demo import load_facts
from tinkex_actors.demo.__main__ import FAST_STEPS
from tinkex_actors.demo._report import Progress
from tinkex_actors.errors import ValidationError

from ._run import run


@pytest.mark.torch
def test_demo_fast_mode_produces_everything(tmp_path: Path) -> None:
    out = run(
        ["-m", "tinkex_actors.demo", "--fast", "--plain", "--output", "out"],
        server=None,
        cwd=tmp_path,
    )
    output = tmp_path / "out"
    summary = json.loads((output / "summary.json").read_text())
    facts = load_facts()
    losses = summary["losses"]
    assert len(losses) == FAST_STEPS
    assert losses[-1] < losses[0] / 2  # it learns
    assert len(summary["before"]) == len(summary["after"]) == summary["facts"] == len(facts)
    assert summary["before"] != summary["after"]
    assert summary["tinker_path"].endswith("/sampler_weights/demo-final")
    checkpoint = Path(summary["checkpoint_dir"])
    assert checkpoint.parent == output / "checkpoint"
    assert {p.name for p in checkpoint.iterdir()} == {
        "adapter_config.json",
        "adapter_model.safetensors",
    }
    png = output / "loss_curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (output / "server.log").is_file()
    assert "Loss curve:  out/loss_curve.png" in out
    assert f"learned {summary['learned']}/{len(facts)} facts" in out
    # The server was stopped.
    (url,) = re.findall(r"healthy at (http://127\.0\.0\.1:\d+)", out)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/api/v1/healthz", timeout=2)


def test_facts_file_is_checked(tmp_path: Path) -> None:
    assert len(load_facts()) >= 4
    bad = tmp_path / "facts.tsv"
    bad.write_text("# a comment\nno tab on this line\n")
    with pytest.raises(ValidationError, match="line 2: expected 'prompt<TAB>completion'"):
        load_facts(bad)
    bad.write_text("# only comments\n\n")
    with pytest.raises(ValidationError, match="no facts"):
        load_facts(bad)
    good = tmp_path / "mine.tsv"
    good.write_text("Two plus two is\t four.\n")
    (fact,) = load_facts(good)
    assert (fact.prompt, fact.completion) == ("Two plus two is", " four.")


@pytest.mark.parametrize("plain", [True, False])
def test_progress_bar_shows_steps_and_loss(plain: bool) -> None:
    stream = io.StringIO()
    progress = Progress(3, stream=stream, plain=plain)
    for loss in (2.5, 1.25, 0.5):
        progress.update(loss)
    progress.close()
    text = stream.getvalue()
    assert text.endswith("\n")
    final = text.rstrip("\n").rsplit("\r", 1)[-1]
    assert "3/3" in final
    assert "loss=0.500" in final
    if plain:
        assert final.startswith(f"training [{'#' * 30}] 3/3 loss=0.500 ")
        assert "training [..." in text  # drawn from the start, step by step
        assert "1/3 loss=2.500" in text
