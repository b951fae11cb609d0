"""Run the embedded server as a subprocess for the length of a ``with`` block.

::

    from tinkex_actors import ServiceClient
    from tinkex_actors.server.embedded import EmbeddedServer

    with EmbeddedServer(engine="torch") as server:          # healthy on return
        with ServiceClient(server.config()) as service:
            training = service.create_lora_training_client("tinkex/tiny-llama")
            ...

:class:`EmbeddedServer` starts ``python -m tinkex_actors.server`` on ``127.0.0.1`` (a free port
by default, reported through ``--port-file``), waits until ``/api/v1/healthz`` answers, and
stops it with SIGTERM (SIGKILL after a timeout) when the block ends. The data directory and
the API key are generated when not given; a generated data directory is deleted afterwards.
The server's standard input is a pipe this process holds open: when this process exits, even
killed by SIGKILL, the server sees end of file and stops gracefully, so it never outlives its
parent as an orphan. A graceful stop saves the live models; :meth:`EmbeddedServer.restart`
brings the server back on the same port, with its state (the models resume exactly) or
without it (a fresh data directory).
By the time the server is healthy the torch engine has published the default model's
tokenizer into the Hugging Face cache, so ``Tokenizer.get("tinkex/tiny-llama")`` works at
once; the model itself finishes loading in the background (requests queue meanwhile).

:func:`config_or_embedded` is what the examples use: a :class:`~tinkex_actors.Config` for the
Tinker server named by ``TINKER_BASE_URL`` / ``TINKER_API_KEY`` when both are set, else for an
embedded server started for the block.

Nothing here imports FastAPI, uvicorn or torch: they run in the subprocess only.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from tinkex_actors._constants import (
    API_KEY_PREFIX,
    EMBEDDED_POLL_INTERVAL,
    EMBEDDED_READY_TIMEOUT,
    EMBEDDED_STOP_TIMEOUT,
    ENV_API_KEY,
    ENV_BASE_URL,
)
from tinkex_actors._endpoints import HEALTHZ
from tinkex_actors.config import Config
from tinkex_actors.errors import EmbeddedServerError, ValidationError
from tinkex_actors.server.auth import generate_api_key

__all__ = ["EmbeddedServer", "config_or_embedded", "generate_api_key"]

_HOST = "127.0.0.1"
_LOG_NAME = "server.log"
_DATA_NAME = "data"
_PORT_NAME = "port"
_ENGINES = ("torch", "null")
#: Environment of the subprocess on top of the caller's: the server never needs the network.
_SERVER_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}

# Servers still running at interpreter exit are stopped (a forgotten stop() must not leave an
# orphan process holding a port). Strong references: a running server dropped by its owner
# stays reachable here until it is stopped.
_running: set[EmbeddedServer] = set()


@atexit.register
def _stop_all_running() -> None:
    for server in list(_running):
        server.close()


class EmbeddedServer:
    """The embedded Tinker-compatible server in a subprocess.

    Args:
        engine: ``"torch"`` (real LoRA training on ``tinkex/tiny-llama``) or ``"null"``
            (instant simulated numbers, no torch).
        data_dir: the server's data directory (database, checkpoints); kept afterwards. When
            None, a temporary one is created and deleted by :meth:`close`.
        port: TCP port on 127.0.0.1; 0 picks a free one (see :attr:`port` once started).
        api_key: the key clients send (``tml-...``); generated when None.
        extra_api_keys: further accepted keys (more tenants), e.g. from :func:`generate_api_key`.
        extra_args: further ``tinkex server`` flags, e.g. ``("--rate-limit", f"{key}=5")``.
        log_path: where the server's stdout and stderr go (appended); by default a file in a
            temporary directory deleted by :meth:`close` (read it with :meth:`log_tail`).
        env: the subprocess's environment (default: this process's, which keeps the Hugging
            Face cache shared with clients in this process); the offline switches
            ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` are always set.
        ready_timeout: longest wait for ``/healthz`` in :meth:`start` (seconds).
        stop_timeout: after SIGTERM, longest wait before SIGKILL in :meth:`stop` (seconds).
        jwt_auth: run with ``--jwt-auth`` (keys are exchanged for JWTs at ``auth/token``).
        jwt_ttl: ``--jwt-ttl``: JWT lifetime in seconds (the server's default when None).
        session_timeout: ``--session-timeout``: sessions without a heartbeat for this many
            seconds expire (None: never).
        test_hooks: serve the test-only ``/api/v1/_test/`` routes (``--test-hooks``).
        exit_with_parent: stop the server when this process exits, even by SIGKILL (the
            server watches a pipe from this process: ``--exit-on-stdin-eof``).

        sample_latency_ms: latency model (``--sample-latency-ms``): each sample completes no
            sooner than this long after it was queued, all samples in parallel.
        train_latency_ms: the same for forward_backward, forward and optim_step
            (``--train-latency-ms``).
        network_delay_ms: every HTTP answer is held this long (``--network-delay-ms``).


    Raises:
        ValidationError: an unknown engine, a port outside 0..65535, a key without the
            ``tml-`` prefix, a ``jwt_ttl`` below 1, a ``session_timeout`` not above 0, or a
            negative latency or delay.

    The API key never appears in the repr. Not thread-safe: start and stop from one thread.
    """

    def __init__(
        self,
        engine: str = "torch",
        data_dir: str | os.PathLike[str] | None = None,
        port: int = 0,
        api_key: str | None = None,
        extra_args: Sequence[str] = (),
        *,
        extra_api_keys: Sequence[str] = (),
        log_path: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        ready_timeout: float = EMBEDDED_READY_TIMEOUT,
        stop_timeout: float = EMBEDDED_STOP_TIMEOUT,
        jwt_auth: bool = False,
        jwt_ttl: int | None = None,
        session_timeout: float | None = None,
        test_hooks: bool = False,
        exit_with_parent: bool = True,
        sample_latency_ms: float = 0.0,
        train_latency_ms: float = 0.0,
        network_delay_ms: float = 0.0,
    ) -> None:
        if engine not in _ENGINES:
            raise ValidationError(
                f"unknown engine {engine!r}; expected one of {_ENGINES}", field="engine"
            )
        if not 0 <= port <= 65535:
            raise ValidationError(f"expected a port in 0..65535, got {port}", field="port")
        keys = [api_key or generate_api_key(), *extra_api_keys]
        for index, key in enumerate(keys):
            if not key.startswith(API_KEY_PREFIX) or key == API_KEY_PREFIX:
                name = "api_key" if index == 0 else f"extra_api_keys[{index - 1}]"
                message = f"expected a key starting with {API_KEY_PREFIX!r}"
                raise ValidationError(message, field=name)
        if jwt_ttl is not None and jwt_ttl < 1:
            raise ValidationError(f"expected a JWT lifetime >= 1 s, got {jwt_ttl}", field="jwt_ttl")
        if session_timeout is not None and not session_timeout > 0:
            raise ValidationError(
                f"expected a session timeout > 0 s (None: never), got {session_timeout}",
                field="session_timeout",
            )
        delays = {
            "sample_latency_ms": sample_latency_ms,
            "train_latency_ms": train_latency_ms,
            "network_delay_ms": network_delay_ms,
        }
        for name, value in delays.items():
            if not value >= 0:  # NaN fails too
                raise ValidationError(f"expected milliseconds >= 0, got {value!r}", field=name)
        self.engine = engine
        self._delays = delays
        self._keys = tuple(keys)
        self._options: list[str] = []
        if jwt_auth:
            self._options.append("--jwt-auth")
        if jwt_ttl is not None:
            self._options.append(f"--jwt-ttl={jwt_ttl}")
        if session_timeout is not None:
            self._options.append(f"--session-timeout={session_timeout}")
        if test_hooks:
            self._options.append("--test-hooks")
        if exit_with_parent:
            self._options.append("--exit-on-stdin-eof")
        self._requested_port = port
        self._port = 0
        self.extra_args = tuple(extra_args)
        self._user_data_dir = Path(data_dir).expanduser() if data_dir is not None else None
        self._user_log = Path(log_path).expanduser() if log_path is not None else None
        self._env = dict(os.environ if env is None else env)
        self._env.update(_SERVER_ENV)
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self._work: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ properties
    @property
    def api_key(self) -> str:
        """The first accepted key."""
        return self._keys[0]

    @property
    def api_keys(self) -> tuple[str, ...]:
        """Every accepted key: :attr:`api_key` first, then ``extra_api_keys``."""
        return self._keys

    @property
    def port(self) -> int:
        """The bound port (0 before the first :meth:`start`)."""
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``.

        Raises:
            EmbeddedServerError: the server was never started.
        """
        if not self._port:
            raise EmbeddedServerError("the embedded server has not been started")
        return f"http://{_HOST}:{self._port}"

    @property
    def data_dir(self) -> Path:
        """The server's data directory (a temporary one unless given)."""
        if self._user_data_dir is not None:
            return self._user_data_dir
        return self._workdir() / _DATA_NAME

    @property
    def log_path(self) -> Path:
        """The server's combined stdout and stderr."""
        return self._user_log if self._user_log is not None else self._workdir() / _LOG_NAME

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The running subprocess, or None."""
        return self._process

    @property
    def running(self) -> bool:
        """Whether the subprocess is alive."""
        return self._process is not None and self._process.poll() is None

    def config(self, api_key: str | None = None, **options: Any) -> Config:
        """A :class:`~tinkex_actors.Config` for this server.

        Args:
            api_key: one of :attr:`api_keys` (default :attr:`api_key`).
            **options: further Config options (``timeout``, ``tags``, ...).
        """
        return Config(api_key=api_key or self.api_key, base_url=self.base_url, **options)

    # ------------------------------------------------------------------ lifecycle
    def _workdir(self) -> Path:
        if self._work is None:
            self._work = Path(tempfile.mkdtemp(prefix=f"tinkex-embedded-{self.engine}-"))
        return self._work

    def start(self) -> EmbeddedServer:
        """Spawn the server and wait until ``/healthz`` answers; returns ``self``.

        After :meth:`stop`, starts again on the same data directory and, when it is still
        free, the same port.

        Raises:
            EmbeddedServerError: it exited during start-up or was not healthy within
                ``ready_timeout`` (the message ends with the log's tail); it is stopped.
        """
        with self._lock:
            if self._process is not None:
                raise EmbeddedServerError("the embedded server is already running")
            port = self._port or self._requested_port
            try:
                self._spawn(port)
            except EmbeddedServerError:
                if not port or port == self._requested_port:
                    raise
                self._spawn(0)  # the old port was taken meanwhile
            _running.add(self)
        return self

    def _command(self, port: int, port_file: Path) -> list[str]:
        command = [sys.executable, "-m", "tinkex_actors.server", "--engine", self.engine]
        command += ["--host", _HOST, "--port", str(port), "--port-file", str(port_file)]
        command += ["--data-dir", str(self.data_dir)]
        for key in self._keys:
            command += ["--api-key", key]
        for name, value in self._delays.items():
            if value:
                command += [f"--{name.replace('_', '-')}", f"{value:g}"]
        return command + self._options + list(self.extra_args)

    def _spawn(self, port: int) -> None:
        port_file = self._workdir() / _PORT_NAME
        port_file.unlink(missing_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            # The write end of the stdin pipe stays with this process only (not inherited by
            # other children: CLOEXEC); the server never reads anything from it but its EOF.
            process = subprocess.Popen(
                self._command(port, port_file),
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                close_fds=True,
            )
        self._process = process
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            code = process.poll()
            if code is not None:
                self._process = None
                _close_stdin(process)
                raise EmbeddedServerError(
                    f"the embedded server exited with status {code} during start-up; "
                    f"log tail:\n{self.log_tail()}"
                )
            text = port_file.read_text().strip() if port_file.is_file() else ""
            if text:
                self._port = int(text)
                if self._healthy():
                    port_file.unlink(missing_ok=True)
                    return
            time.sleep(EMBEDDED_POLL_INTERVAL)
        self.stop()
        raise EmbeddedServerError(
            f"the embedded server was not healthy after {self.ready_timeout:g} s; "
            f"log tail:\n{self.log_tail()}"
        )

    def _healthy(self) -> bool:
        url = f"http://{_HOST}:{self._port}{HEALTHZ.path()}"
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout: float | None = None) -> int:
        """SIGTERM, wait up to ``timeout`` (default ``stop_timeout``), then SIGKILL.

        Returns the exit status (0 after a clean stop; 0 too when it was not running). The
        data directory is kept, so :meth:`start` can run it again.
        """
        process, self._process = self._process, None
        _running.discard(self)
        if process is None:
            return 0
        wait = self.stop_timeout if timeout is None else timeout
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(wait)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(wait)
        _close_stdin(process)
        return process.returncode

    def kill(self) -> int:
        """SIGKILL the server, as a crash would (nothing is saved); returns the exit status.

        The data directory is kept: :meth:`start` runs it again, and models the killed
        process held answer 410 (lost) there.
        """
        process, self._process = self._process, None
        _running.discard(self)
        if process is None:
            return 0
        if process.poll() is None:
            process.kill()
            process.wait(self.stop_timeout)
        _close_stdin(process)
        return process.returncode

    def restart(self, keep_state: bool = True, *, graceful: bool = True) -> int:
        """Stop the server and start it again on the same port (when still free).

        Args:
            keep_state: keep the data directory (sessions, runs, checkpoints, and the live
                models a graceful stop saved). False starts on an empty one, as a server that
                lost its disk: only for a generated data directory (``data_dir=None``).
            graceful: stop with SIGTERM (:meth:`stop`: live models are saved) or SIGKILL
                (:meth:`kill`: as a crash; the live models are lost).

        Returns:
            The exit status of the stopped process.

        Raises:
            EmbeddedServerError: the restart failed (see :meth:`start`), or ``keep_state``
                is False with a data directory of the caller's.
        """
        if not keep_state and self._user_data_dir is not None:
            raise EmbeddedServerError(
                "restart(keep_state=False) empties the data directory: only for a generated "
                "one (data_dir=None), never one you passed"
            )
        code = self.stop() if graceful else self.kill()
        if not keep_state:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        self.start()
        return code

    def close(self) -> int:
        """:meth:`stop`, then delete the temporary directory (a generated data dir and log)."""
        code = self.stop()
        work, self._work = self._work, None
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
        return code

    def log_tail(self, chars: int = 4000) -> str:
        """The last ``chars`` characters of the server's log."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __enter__(self) -> EmbeddedServer:
        if self._process is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"running on {self.base_url}" if self.running else "stopped"
        return f"EmbeddedServer(engine={self.engine!r}, {state}, keys=<{len(self._keys)}>)"


def _close_stdin(process: subprocess.Popen[bytes]) -> None:
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()


@contextlib.contextmanager
def config_or_embedded(
    engine: str = "torch",
    *,
    env: Mapping[str, str] | None = None,
    **server_options: Any,
) -> Iterator[Config]:
    """A Config for ``TINKER_BASE_URL`` / ``TINKER_API_KEY``, else for an embedded server.

    When both variables are set (in ``env``, default ``os.environ``), yields
    ``Config.new()`` built from the environment and starts nothing. Otherwise starts an
    :class:`EmbeddedServer` (``engine`` and ``server_options`` passed on), yields its
    :meth:`EmbeddedServer.config` and stops it when the block ends.
    """
    environ = os.environ if env is None else env
    if environ.get(ENV_BASE_URL) and environ.get(ENV_API_KEY):
        yield Config.new(env=environ)
        return
    with EmbeddedServer(engine, **server_options) as server:
        yield server.config()
