"""Run only by ``test_secret_scan.py`` in a child pytest: a test that leaks a key on purpose.

Its name does not match ``test_*.py``, so a normal run never collects it; the child run
passes the file explicitly with ``TINKEX_LEAK_PROBE=1``; each test leaks through one channel.
"""

from __future__ import annotations

import logging
import os

import pytest

from tinkex_actors import telemetry

KEY = "tml-probe-" + "0123456789abcdef"


@pytest.mark.parametrize("channel", ["log", "telemetry", "stdout", "masked"])
def test_leak(channel: str) -> None:
    if os.environ.get("TINKEX_LEAK_PROBE") != "1":
        pytest.skip("only run by test_secret_scan.py")
    if channel == "log":
        logging.getLogger("tinkex_actors.probe").warning("request failed for key %s", KEY)
    elif channel == "telemetry":
        telemetry.execute(telemetry.HTTP_REQUEST_START, {"monotonic_time": 0}, {"path": KEY})
    elif channel == "stdout":
        print(f"config: api_key={KEY}")
    else:
        logging.getLogger("tinkex_actors.probe").warning("key tml-*** masked")
