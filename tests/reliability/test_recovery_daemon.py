"""The recovery daemon, scaled down (``bench/recovery_soak.py``; ``make soak-recovery`` runs it
for five minutes).

A training and sampling daemon runs against an embedded null server that is restarted four
times under it: killed (live models lost), wiped twice (everything lost: the server restarted
without its state) and stopped gracefully (state kept). In a fresh process (it owns the
server), like the other soak.

* With ``RecoveryPolicy()`` the daemon finishes every step it was asked to, every base-model
  sample completes, no call outlives its bound, and the model equals the run without
  restarts: every step's loss, a probe batch's logprobs and the final checkpoint's tensors.
* With ``RecoveryPolicy.off()`` every call that met lost state raised its typed error
  (``ModelLostError``, ``SamplerLostError``, ``SessionLostError``) within its bound, and
  nothing hung.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _soak(tmp_path: Path, *args: str, budget: float) -> dict[str, Any]:
    report_path = tmp_path / "recovery-soak.json"
    env = {**os.environ, "TINKER_TELEMETRY": "0"}
    command = [
        sys.executable,
        str(ROOT / "bench" / "recovery_soak.py"),
        *args,
        "--json",
        str(report_path),
    ]
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=budget
    )
    print(done.stdout)
    assert report_path.exists(), done.stdout + done.stderr[-4000:]
    report: dict[str, Any] = json.loads(report_path.read_text())
    assert done.returncode == (0 if report["passed"] else 1), done.stderr[-4000:]
    return report


def test_the_daemon_finishes_every_step_exactly_across_four_restarts(tmp_path: Path) -> None:
    report = _soak(
        tmp_path,
        "--seconds", "30", "--steps", "60", "--checkpoint-every", "5",
        "--restarts", "kill,wipe,graceful,wipe",
        budget=240,
    )  # fmt: skip
    assert report["errors"] == []
    assert [r["kind"] for r in report["restarts"]] == ["kill", "wipe", "graceful", "wipe"]
    assert report["finished_steps"] == 60
    assert report["executions"] >= 60 + 1  # re-done steps after the losses
    events = report["recovery_events"]
    assert events["session.recovered"] == 2  # one per wipe, however many triggers
    assert events["model.restored"] >= 3  # the kill and both wipes (and any lost result)
    assert events.get("model.failed", 0) == 0
    assert report["restores"][0]["checkpoint"]  # after the kill: from a checkpoint
    assert report["samples_ok"] >= 60 * 4
    assert report["samples_failed"] == {}
    assert report["longest_call"] < 60
    assert report["losses_equal"]
    assert report["logprobs_equal"]
    assert report["tensors_equal"]
    assert report["passed"]


def test_without_recovery_every_loss_is_a_typed_error_and_nothing_hangs(tmp_path: Path) -> None:
    report = _soak(
        tmp_path,
        "--recovery", "off", "--seconds", "8", "--steps", "20", "--restarts", "kill,wipe",
        budget=180,
    )  # fmt: skip
    assert report["errors"] == []
    failures = report["typed_failures"]
    assert failures["ModelLostError"] == 1  # the training call that met the kill
    assert failures["SamplerLostError"] == 1  # the sample that met the wipe
    for after in ("ModelLostError", "SamplerLostError", "SessionLostError"):
        assert failures[f"after:{after}"] == 1
    assert report["longest_call"] < 60
    assert report["passed"]
