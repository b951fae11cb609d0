"""Run an example script or the demo in a subprocess, against a given server or its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from _servers import ServerHandle

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
#: Generous: an example on a loaded 2-core machine; most take a few seconds.
TIMEOUT = 240


def example_env(server: ServerHandle | None) -> dict[str, str]:
    """This process's environment; with ``server``, the TINKER_* variables naming it."""
    env = {k: v for k, v in os.environ.items() if k not in ("TINKER_BASE_URL", "TINKER_API_KEY")}
    env["PYTHONUNBUFFERED"] = "1"
    if server is not None:
        env.update(TINKER_BASE_URL=server.base_url, TINKER_API_KEY=server.api_key)
    return env


def run(argv: list[str], server: ServerHandle | None, cwd: Path, timeout: float = TIMEOUT) -> str:
    """Run ``python argv...``; fail with its output unless it exits 0. Returns stdout."""
    done = subprocess.run(
        [sys.executable, *argv],
        env=example_env(server),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, (
        f"{argv} exited {done.returncode}\n--- stdout\n{done.stdout[-4000:]}\n"
        f"--- stderr\n{done.stderr[-4000:]}"
    )
    return done.stdout


def run_example(
    name: str, *args: str, server: ServerHandle | None, cwd: Path, timeout: float = TIMEOUT
) -> str:
    """Run ``examples/<name>.py``."""
    return run([str(EXAMPLES / f"{name}.py"), *args], server, cwd, timeout)
