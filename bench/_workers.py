"""The coordinator's side of a worker process (see :mod:`bench._worker`)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from types import TracebackType
from typing import Any

from bench._common import API_KEY
from bench._drivers import Spec

ROOT = Path(__file__).resolve().parent.parent


class WorkerError(RuntimeError):
    """A worker failed a command or died (its stderr tail is in the message)."""


class Worker:
    """One client driver in its own process.

    Args:
        driver: a key of :data:`bench._worker.DRIVERS`.
        base_url: the server.
        spec: the work.
        cpus: CPUs to pin the worker to.
    """

    def __init__(
        self, driver: str, base_url: str, spec: Spec, cpus: Sequence[int] | None = None
    ) -> None:
        self.driver = driver
        self._log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench._worker",
                driver,
                base_url,
                API_KEY,
                json.dumps(asdict(spec)),
                ",".join(str(c) for c in cpus or ()),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=ROOT,
        )

    def send(self, op: str, **args: Any) -> None:
        """Send a command without waiting for its answer (see :meth:`receive`)."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.process.stdin.flush()

    def receive(self) -> dict[str, Any]:
        """The answer to the last command sent."""
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(30)
            raise WorkerError(f"{self.driver} worker died:\n{self._stderr()}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise WorkerError(f"{self.driver} worker: {reply['error']}\n{self._stderr()}")
        return reply

    def ask(self, op: str, **args: Any) -> dict[str, Any]:
        """Send a command and wait for its answer."""
        self.send(op, **args)
        return self.receive()

    def _stderr(self) -> str:
        # The whole log goes to a file that outlives the run; the message shows its end.
        self._log.seek(0)
        text = self._log.read()
        fd, path = tempfile.mkstemp(prefix=f"tinkex-bench-{self.driver}-", suffix=".log")
        with os.fdopen(fd, "w") as keep:
            keep.write(text)
        return f"{text[-4000:]}\n(full worker log: {path})"

    def close(self) -> None:
        """Close the client (if the process lives) and end the process."""
        if self.process.poll() is None:
            with contextlib.suppress(WorkerError, OSError):
                self.ask("close")
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        self._log.close()

    def __enter__(self) -> Worker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def start_all(
    drivers: Sequence[str], base_url: str, spec: Spec, cpus: Sequence[int] | None = None
) -> dict[str, Worker]:
    """Start one worker per driver and set them all up (in parallel)."""
    workers = {name: Worker(name, base_url, spec, cpus) for name in drivers}
    try:
        for worker in workers.values():
            worker.send("setup")
        for worker in workers.values():
            worker.receive()
    except BaseException:
        close_all(workers)
        raise
    return workers


def close_all(workers: dict[str, Worker]) -> None:
    """Close every worker."""
    for worker in workers.values():
        worker.close()
