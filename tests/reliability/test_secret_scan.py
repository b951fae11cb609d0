"""The session-wide secret scan (``_secret_scan.py``, wired in ``tests/conftest.py``) works.

A child pytest runs probe tests that leak a key through a log record, a telemetry event and
stdout, and one that shows only a masked key: the run must fail and name each leak. And
in this very session the scan is attached and looking.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tinkex_actors import telemetry

from ._secret_scan import KEY_PATTERN, SecretScan

ROOT = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).with_name("_leak_probe.py")


def test_a_leaked_key_fails_the_run() -> None:
    env = {**os.environ, "TINKEX_LEAK_PROBE": "1"}
    command = [sys.executable, "-m", "pytest", str(PROBE), "-q", "-p", "no:randomly",
               "-p", "no:cacheprovider"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    report = done.stdout + done.stderr
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, report
    assert "4 passed" in done.stdout, report  # the tests passed: the scan failed the run
    assert "4 API key(s) found" in done.stdout, report  # the masked key is not one
    for channel in ("log tinkex_actors.probe", "telemetry tinkex.http.request.start",
                    "test_leak[log] [Captured log call]",
                    "test_leak[stdout] [Captured stdout call]"):  # fmt: skip
        assert channel in done.stdout, (channel, report)


def test_the_pattern() -> None:
    for leaked in ("X-API-Key: tml-abcdef123", "key=tml-test-0a1b2c3d", "eyJhbGciOi.eyJzdWIi.sig"):
        assert KEY_PATTERN.search(leaked), leaked
    for fine in ("api_key='tml-***'", "text/html-page", "tml-", "tml-abc", "model tinkex/tiny"):
        assert not KEY_PATTERN.search(fine), fine


def test_the_session_scan_is_watching() -> None:
    from conftest import SECRET_SCAN  # the session's instance

    before = SECRET_SCAN.scanned.copy()
    logging.getLogger("tinkex_actors.probe").warning("nothing secret here")
    telemetry.execute(telemetry.HTTP_REQUEST_START, {"monotonic_time": 0}, {"path": "/x"})
    assert SECRET_SCAN.scanned["log"] == before["log"] + 1
    assert SECRET_SCAN.scanned["telemetry"] == before["telemetry"] + 1
    assert isinstance(SECRET_SCAN, SecretScan)
