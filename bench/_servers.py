"""Benchmark servers: ``python -m tinkex_actors.server`` in its own process.

Each server gets a temporary data directory (removed on stop), binds a free 127.0.0.1 port
(reported through ``--port-file``) and accepts :data:`~bench._common.API_KEY`. ``cpus`` pins
the process (and every thread it starts) to those CPUs before it runs.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from bench._common import API_KEY

READY_TIMEOUT = 120.0


def pinned(cpus: Sequence[int] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that restricts the child to ``cpus`` (None: no restriction)."""
    if not cpus:
        return None
    chosen = set(cpus)

    def pin() -> None:
        os.sched_setaffinity(0, chosen)

    return pin


class Server:
    """One embedded server process. Use as a context manager.

    Args:
        engine: ``"null"`` or ``"torch"``.
        extra: further command-line flags (``--simulate-ms=50``).
        cpus: CPUs to pin the server to.
    """

    def __init__(
        self, engine: str = "null", extra: Sequence[str] = (), cpus: Sequence[int] | None = None
    ) -> None:
        self.engine = engine
        self.extra = tuple(extra)
        self.cpus = cpus
        self.root = Path(tempfile.mkdtemp(prefix=f"tinkex-bench-{engine}-"))
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        """Start the process and wait until ``/api/v1/healthz`` answers."""
        port_file = self.root / "port"
        log_path = self.root / "server.log"
        env = dict(os.environ)
        env.setdefault("HF_HUB_OFFLINE", "1")
        env["HF_HOME"] = str(self.root / "hf")  # never touch the user's cache
        command = [
            sys.executable,
            "-m",
            "tinkex_actors.server",
            f"--engine={self.engine}",
            "--port=0",
            f"--port-file={port_file}",
            f"--data-dir={self.root / 'data'}",
            f"--api-key={API_KEY}",
            *self.extra,
        ]
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=pinned(self.cpus),
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while not (port_file.exists() and port_file.read_text().strip()):
            self._check_alive(deadline)
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/api/v1/healthz")
                status = conn.getresponse().status
                conn.close()
                if status == 200:
                    return self
            except OSError:
                pass
            self._check_alive(deadline)
            time.sleep(0.05)

    def _check_alive(self, deadline: float) -> None:
        assert self.process is not None
        if self.process.poll() is not None or time.monotonic() > deadline:
            log = (self.root / "server.log").read_text(errors="replace")[-3000:]
            self.stop()
            raise RuntimeError(f"the {self.engine} server did not start:\n{log}")

    def stop(self) -> None:
        """SIGTERM, then kill; remove the data directory."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(30)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            # Whatever went wrong, the server's side of it goes with the traceback.
            try:
                tail = (self.root / "server.log").read_text(errors="replace")[-4000:]
            except OSError:
                tail = ""
            if tail:
                sys.stderr.write(f"--- {self.engine} server log (tail) ---\n{tail}\n")
        self.stop()
