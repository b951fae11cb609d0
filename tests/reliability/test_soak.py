"""The 30-second soak (``bench/soak.py``; ``make soak`` runs it for 10 minutes).

Mixed training and sampling against the shared null server in a fresh process (so its RSS is
the SDK's alone): after the warm-up, RSS must grow less than 20 MB, the thread count must stay
flat, nothing may fail, and every SDK thread must be gone once the clients closed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _servers import ServerHandle

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SECONDS = 30


def test_30_second_soak_has_no_leak_and_no_error(null_server: ServerHandle, tmp_path: Path) -> None:
    report_path = tmp_path / "soak.json"
    env = {**os.environ, "TINKER_API_KEY": null_server.api_key, "TINKER_TELEMETRY": "0"}
    command = [
        sys.executable,
        str(ROOT / "bench" / "soak.py"),
        "--seconds",
        str(SECONDS),
        "--base-url",
        null_server.base_url,
        "--json",
        str(report_path),
    ]
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=SECONDS + 120
    )
    assert report_path.exists(), done.stdout + done.stderr
    report = json.loads(report_path.read_text())
    print(done.stdout)
    assert report["errors"] == []
    assert report["steps"] > 20
    assert report["samples"] > 200
    assert report["sampler_swaps"] > 3
    assert report["sessions_churned"] > 2
    assert report["rss_growth"] < 20.0
    assert report["threads_flat"], report["thread_samples"]
    assert report["threads_after_close"] <= report["threads_before"]
    assert report["passed"]
    assert done.returncode == 0, done.stdout + done.stderr
