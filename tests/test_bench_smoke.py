"""``python -m bench --smoke``: the benchmark harness still runs end to end.

Tiny sizes, one repetition: the figures mean nothing and nothing is asserted about them (the
benchmark's job is ``make bench``). What must hold: every workload ran against its servers
with our SDK, the official SDK and the floors, the table printed, and the JSON has a finite
figure for every client of every row.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(tmp_path: Path, workloads: str) -> tuple[str, dict[str, Any]]:
    output = tmp_path / "latest.json"
    done = subprocess.run(
        [
            sys.executable, "-m", "bench", "--smoke", "--quiet",
            "--only", workloads, "--output", str(output),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(output.read_text())
    return done.stdout, result


def _check_rows(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        for client in ("ours", "official", "floor"):
            stat = row[client]
            if stat is not None:
                assert all(math.isfinite(v) for v in stat["values"]), (row["workload"], client)
        assert row["met"] in ("yes", "NO", "-")


def test_every_workload_but_the_torch_one(tmp_path: Path) -> None:
    stdout, result = _run(
        tmp_path, "transport,sequential,fanout,encode,pipelining,footprint,latency"
    )
    assert re.search(r"^workload +\| unit +\| ours", stdout, re.MULTILINE)
    assert "targets met:" in stdout
    assert result["smoke"] is True
    rows = result["rows"]
    assert {row["workload"].split()[0] for row in rows} == {"0", "1", "2", "3", "4", "5", "7"}
    by_name = {row["workload"]: row for row in rows}
    forward = by_name["1 seq forward_backward 1x16"]
    # Our SDK, the official SDK and both floors (requests, bare http.client) each ran the
    # sequential calls.
    assert all(forward[client] for client in ("ours", "official", "floor"))
    assert forward["extra"]["http.client"]
    assert [t["kind"] for t in forward["targets"]] == ["official", "floor"]
    assert all(row["ours"] is not None for row in rows)
    _check_rows(rows)
    _check_latency_rows(by_name, result["settings"])
    assert result["table"].splitlines()[0].startswith("workload")
    _check_report(tmp_path, result)


def _check_latency_rows(by_name: dict[str, dict[str, Any]], settings: dict[str, Any]) -> None:
    """Workload 7 ran both SDKs in both modes against the latency-model server."""
    n, latency_s = settings["load_samples"], settings["sample_latency_ms"] / 1000
    burst = by_name[f"7 burst of {n} samples @{settings['sample_latency_ms']:g} ms: wall"]
    per_future = by_name["7 per-future polling: burst wall"]
    for row in (burst, per_future):
        assert row["ours"]
        assert row["official"]
        # Nothing finishes before the server's latency: the ideal and both SDKs are above it.
        assert row["floor"]["median"] >= latency_s
        assert min(row["ours"]["median"], row["official"]["median"]) >= latency_s
    # The server saw the samples in flight at once (its --debug-stats counters).
    peak = by_name["7 burst: server peak in flight"]
    assert peak["ours"]["median"] >= 1
    assert peak["floor"]["median"] == n
    for name in ("7 burst: peak client threads", "7 burst: RSS growth"):
        assert [t["kind"] for t in by_name[name]["targets"]] == ["absolute"]
    steps = [name for name in by_name if name.startswith("7 train step")]
    assert steps
    assert by_name[steps[0]]["floor"]  # the same step without load


def _check_report(tmp_path: Path, result: dict[str, Any]) -> None:
    """``bench.report`` puts the run's table between the markers and keeps the rest."""
    sys.path.insert(0, str(ROOT))
    try:
        from bench import report
    finally:
        sys.path.remove(str(ROOT))
    page = tmp_path / "page.md"
    page.write_text(f"# Title\n\n{report.START}\nold table\n{report.END}\n\n## After\n")
    report.update(result, (page,))
    report.update(result, (page,))  # idempotent: the block is replaced, not nested
    text = page.read_text()
    assert text.startswith("# Title\n")
    assert text.endswith("\n## After\n")
    assert "old table" not in text
    assert text.count(report.START) == 1
    assert text.count(report.END) == 1
    assert result["table"] in text
    assert result["command"] in text
    assert "targets met:" in text
    broken = tmp_path / "broken.md"
    broken.write_text(f"{report.START}\nno end marker, nothing may be eaten\n")
    with pytest.raises(ValueError, match="latest-table"):
        report.update(result, (broken,))


@pytest.mark.torch
def test_embedded_torch_workload(tmp_path: Path) -> None:
    _, result = _run(tmp_path, "embedded")
    rows = result["rows"]
    assert [row["workload"] for row in rows] == [
        "6 torch train step 8x128",
        "6 torch sample 32 tokens",
    ]
    for row in rows:
        assert all(row[client] for client in ("ours", "official", "floor"))
    _check_rows(rows)
