"""Test harness: run the embedded server as a subprocess.

``start_server(engine=..., data_dir=...)`` starts ``python -m tinkex_actors.server`` on a
free 127.0.0.1 port (the server binds port 0 and reports the port through ``--port-file``),
waits for ``/api/v1/healthz`` and returns a :class:`ServerHandle`. ``stop()`` sends SIGTERM
and kills after a timeout; ``restart()`` stops and starts again on the same data directory
and, when it is still free, the same port (so clients built before keep working).
``session_server(engine)`` is the context manager behind the session fixtures: its own temp
directory (removed afterwards) holding the data dir, the log and, unless given, an HF cache.
No server threads run in the test process. The process handling (spawn, port file, healthz,
SIGTERM/SIGKILL) is :class:`tinkex_actors.server.embedded.EmbeddedServer`'s; this module adds
the test conventions (two tenants, an HF cache per handle, restarts on the same port).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tinkex_actors.errors import EmbeddedServerError
from tinkex_actors.server.embedded import EmbeddedServer

__all__ = ["ServerError", "ServerHandle", "new_api_key", "session_server", "start_server"]

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0

#: The server did not start or stop as expected (its log tail is in the message).
ServerError = EmbeddedServerError


def new_api_key() -> str:
    """A random key of the form the official SDK accepts."""
    return "tml-test-" + secrets.token_hex(12)


@dataclass
class ServerHandle:
    """A server subprocess and how to reach it.

    Attributes:
        engine: ``"null"`` or ``"torch"``.
        data_dir: the server's ``--data-dir``.
        log_path: the server's combined stdout/stderr (appended across restarts).
        api_key / other_api_key: two accepted keys (two tenants).
        hf_home: ``HF_HOME`` of the server process.
        extra_args: further command-line flags.
    """

    engine: str
    data_dir: Path
    log_path: Path
    hf_home: Path
    api_key: str = field(default_factory=new_api_key)
    other_api_key: str = field(default_factory=new_api_key)
    extra_args: tuple[str, ...] = ()
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    returncodes: list[int] = field(default_factory=list)
    _server: EmbeddedServer | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def headers(self, api_key: str | None = None, **extra: str) -> dict[str, str]:
        """Request headers carrying ``api_key`` (default: :attr:`api_key`)."""
        return {"X-API-Key": api_key or self.api_key, **extra}

    def env(self) -> dict[str, str]:
        """The subprocess environment: offline, no telemetry, this handle's HF cache."""
        env = dict(os.environ)
        env.update(
            HF_HOME=str(self.hf_home),
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            TINKER_TELEMETRY="0",
            PYTHONUNBUFFERED="1",
        )
        return env

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server log."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def start(self, ready_timeout: float = READY_TIMEOUT) -> None:
        """Start the subprocess (reusing :attr:`port` if set) and wait until healthy."""
        if self.process is not None:
            raise ServerError("already running")
        try:
            self._spawn(self.port, ready_timeout)
        except ServerError:
            if not self.port:
                raise
            self._spawn(0, ready_timeout)  # the old port was taken meanwhile

    def _spawn(self, port: int, ready_timeout: float) -> None:
        server = EmbeddedServer(
            self.engine,
            data_dir=self.data_dir,
            port=port,
            api_key=self.api_key,
            extra_api_keys=(self.other_api_key,),
            extra_args=("--log-level", "INFO", *self.extra_args),
            log_path=self.log_path,
            env=self.env(),
            ready_timeout=ready_timeout,
            stop_timeout=STOP_TIMEOUT,
        )
        try:
            server.start()
        except EmbeddedServerError:
            server.close()
            raise
        self._server = server
        self.port = server.port
        self.process = server.process

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; returns the exit status."""
        server, self._server = self._server, None
        self.process = None
        if server is None:
            return 0
        code = server.stop(timeout)
        server.close()  # its private temp dir (the port file); data and log are ours
        self.returncodes.append(code)
        return code

    def restart(self, ready_timeout: float = READY_TIMEOUT) -> int:
        """Stop (SIGTERM) and start again on the same data directory; returns the stop status."""
        code = self.stop()
        self.start(ready_timeout)
        return code


def start_server(
    *,
    engine: str = "null",
    data_dir: Path,
    log_path: Path | None = None,
    hf_home: Path | None = None,
    api_keys: Sequence[str] = (),
    extra_args: Sequence[str] = (),
    ready_timeout: float = READY_TIMEOUT,
) -> ServerHandle:
    """Start a server subprocess and wait until it answers healthz."""
    keys = list(api_keys) or [new_api_key(), new_api_key()]
    if len(keys) == 1:
        keys.append(new_api_key())
    handle = ServerHandle(
        engine=engine,
        data_dir=data_dir,
        log_path=log_path or data_dir.parent / f"{data_dir.name}.log",
        hf_home=hf_home or data_dir.parent / f"{data_dir.name}-hf",
        api_key=keys[0],
        other_api_key=keys[1],
        extra_args=tuple(extra_args),
    )
    handle.data_dir.mkdir(parents=True, exist_ok=True)
    handle.hf_home.mkdir(parents=True, exist_ok=True)
    handle.start(ready_timeout)
    return handle


@contextlib.contextmanager
def session_server(
    engine: str,
    *,
    extra_args: Sequence[str] = (),
    hf_home: Path | None = None,
    ready_timeout: float = READY_TIMEOUT,
) -> Iterator[ServerHandle]:
    """A server in its own temp directory, stopped and removed on exit."""
    root = Path(tempfile.mkdtemp(prefix=f"tinkex-{engine}-server-"))
    handle: ServerHandle | None = None
    try:
        handle = start_server(
            engine=engine,
            data_dir=root / "data",
            log_path=root / "server.log",
            hf_home=hf_home or root / "hf",
            extra_args=extra_args,
            ready_timeout=ready_timeout,
        )
        yield handle
    finally:
        if handle is not None:
            handle.stop()
        shutil.rmtree(root, ignore_errors=True)
