"""No orphan servers: an embedded server exits with the process that started it, even on SIGKILL.

``EmbeddedServer`` gives the server a pipe on standard input and passes
``--exit-on-stdin-eof``; when the parent dies the kernel closes the pipe and the server stops
gracefully. A server started by hand (``tinkex server``, no flag) ignores its standard input.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tinkex_actors.server.embedded import generate_api_key

from ._helpers import API

EXIT_WAIT = 20.0

PARENT = """
import sys, time
from tinkex_actors.server.embedded import EmbeddedServer

server = EmbeddedServer(
    "null", data_dir=sys.argv[1], log_path=sys.argv[2], extra_args=("--log-level", "INFO")
)
server.start()
print(server.process.pid, server.port, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped by its new parent, does not)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[0] != "Z"


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{API}/healthz", timeout=5) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _wait_until(check: Callable[[], object], what: str, timeout: float = EXIT_WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_embedded_server_exits_when_its_parent_is_sigkilled(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the parent's temp files land here
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path / "data"), str(log)],
        stdout=subprocess.PIPE,
        env=env,
    )
    pid = 0
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline().decode()
        assert line, (
            f"the parent did not start its server: {log.read_text() if log.exists() else ''}"
        )
        pid, port = (int(x) for x in line.split())
        assert _healthy(port)

        parent.kill()
        parent.wait(EXIT_WAIT)
        _wait_until(lambda: not _alive(pid), "the server outlived its killed parent")
        text = log.read_text()
        assert "tinkex.server.stdin_closed_stopping" in text
        assert "Application shutdown complete" in text  # a graceful stop, not a crash
        assert not _healthy(port)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(EXIT_WAIT)
        if parent.stdout is not None:
            parent.stdout.close()
        if pid and _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _cli(tmp_path: Path, *flags: str) -> tuple[subprocess.Popen[bytes], Path]:
    port_file = tmp_path / "port"
    command = [
        sys.executable,
        "-m",
        "tinkex_actors.server",
        "--engine=null",
        "--port=0",
        f"--port-file={port_file}",
        f"--data-dir={tmp_path / 'data'}",
        f"--api-key={generate_api_key()}",
        "--log-level=INFO",
        *flags,
    ]
    log = tmp_path / "cli.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    return process, log


def test_a_server_started_by_hand_ignores_its_stdin(tmp_path: Path) -> None:
    process, log = _cli(tmp_path)
    try:
        port_file = tmp_path / "port"
        _wait_until(lambda: port_file.exists() and port_file.read_text(), log.read_text())
        port = int(port_file.read_text())
        _wait_until(lambda: _healthy(port), log.read_text())
        time.sleep(1.0)  # its stdin is at end of file from the start
        assert process.poll() is None, log.read_text()
        assert _healthy(port)
        process.send_signal(signal.SIGTERM)
        assert process.wait(EXIT_WAIT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(EXIT_WAIT)


def test_exit_on_stdin_eof_stops_cleanly(tmp_path: Path) -> None:
    process, log = _cli(tmp_path, "--exit-on-stdin-eof")
    try:
        assert process.wait(EXIT_WAIT) == 0, log.read_text()
        assert "tinkex.server.stdin_closed_stopping" in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(EXIT_WAIT)
