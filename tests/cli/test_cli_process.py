"""``python -m tinkex_actors.cli`` as a real process: exit statuses and no tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys

from _servers import ServerHandle


def _tinkex(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tinkex_actors.cli", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_bad_input_exits_2_with_one_line() -> None:
    done = _tinkex(
        "checkpoint", "info", "tinker://run/weights", env={"TINKER_API_KEY": "tml-k-0000000000"}
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert "tinker://<training_run_id>" in done.stderr
    assert "Traceback" not in done.stderr


def test_server_error_exits_1_and_listing_works(null_server: ServerHandle) -> None:
    env = {"TINKER_API_KEY": null_server.api_key, "TINKER_BASE_URL": null_server.base_url}
    missing = _tinkex("run", "info", "no-such-run", env=env)
    assert missing.returncode == 1
    assert "404" in missing.stderr
    assert missing.stderr.count("\n") == 1
    assert "Traceback" not in missing.stderr
    listing = _tinkex("run", "list", "--json", env=env)
    assert listing.returncode == 0, listing.stderr
    assert '"training_runs"' in listing.stdout
