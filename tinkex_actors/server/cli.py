"""Command line of the embedded server (``tinkex server`` / ``python -m tinkex_actors.server``).

The listening socket is bound before uvicorn starts (``--port 0`` picks a free port; the
chosen one is printed and, with ``--port-file``, written to a file). SIGTERM and SIGINT stop
the server cleanly: long-polls are released, in-flight engine work finishes, queued work
fails, live models are saved, SQLite is closed, and the process exits 0.

With ``--exit-on-stdin-eof`` (what :class:`~tinkex_actors.server.embedded.EmbeddedServer`
passes, holding the other end of a pipe) the server stops the same way once its standard
input reaches end of file: when the process that started it exits, even by SIGKILL, the
kernel closes that pipe, so no orphan server is left running. Without the flag (``tinkex
server`` in a terminal) standard input is ignored.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import orjson

from tinkex_actors._constants import (
    CHECKPOINT_TTL_MIN,
    SERVER_ARCHIVE_URL_TTL,
    SERVER_DEFAULT_HOST,
    SERVER_DEFAULT_PORT,
    SERVER_EXPIRY_SWEEP_INTERVAL,
    SERVER_GRACEFUL_SHUTDOWN,
    SERVER_MAX_BODY_BYTES,
    SERVER_POLL_HOLD,
    SERVER_SEQ_GAP_TIMEOUT,
    SERVER_WORKERS,
)
from tinkex_actors._logging import LOGGER_NAME, get_logger
from tinkex_actors.errors import ConfigError
from tinkex_actors.server.engines import ENGINE_NAMES, load_engine
from tinkex_actors.server.settings import JWT_DEFAULT_TTL

__all__ = ["add_arguments", "default_data_dir", "main", "run"]


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/tinkex_actors/server`` (``~/.local/share/...`` by default)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "tinkex_actors" / "server"


def _key_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the server's flags to ``parser``."""
    add = parser.add_argument
    add("--host", default=SERVER_DEFAULT_HOST, help="interface to bind (default %(default)s)")
    add("--port", type=int, default=SERVER_DEFAULT_PORT, help="port; 0 picks a free one")
    add("--port-file", type=Path, help="write the bound port to this file once listening")
    add("--data-dir", type=Path, default=None, help="database, checkpoints, archive secret")
    add(
        "--api-key",
        action="append",
        default=[],
        metavar="KEY",
        help="accepted key (tml-...); repeatable; one is generated and printed when none given",
    )
    add("--engine", choices=ENGINE_NAMES, default="torch", help="compute engine")
    add(
        "--model",
        action="append",
        default=[],
        type=_key_value,
        metavar="NAME=PATH",
        help="serve a local Hugging Face model directory under NAME (torch engine); repeatable",
    )
    add("--simulate-ms", type=float, default=0.0, help="null engine: work per fwd/bwd and step")
    add("--poll-hold-seconds", type=float, default=SERVER_POLL_HOLD, help="retrieve_future hold")
    add("--max-body-bytes", type=int, default=SERVER_MAX_BODY_BYTES, help="413 above this")
    add("--threads", type=int, default=0, help="engine compute threads (0: engine default)")
    add("--workers", type=int, default=SERVER_WORKERS, help="worker threads for engine calls")
    add("--seq-gap-timeout", type=float, default=SERVER_SEQ_GAP_TIMEOUT, help="seconds")
    add("--archive-url-ttl", type=int, default=SERVER_ARCHIVE_URL_TTL, help="seconds")
    add("--min-ttl-seconds", type=int, default=CHECKPOINT_TTL_MIN, help="smallest checkpoint TTL")
    add("--expiry-sweep-interval", type=float, default=SERVER_EXPIRY_SWEEP_INTERVAL)
    add(
        "--client-config",
        action="append",
        default=[],
        type=_key_value,
        metavar="FLAG=JSON",
        help="flag answered by client/config, e.g. fwdbwd_max_chunk_len=2; repeatable",
    )
    add(
        "--rate-limit",
        action="append",
        default=[],
        type=_key_value,
        metavar="KEY=N",
        help="allow API key KEY at most N asample requests per second (429 above); repeatable",
    )
    add("--jwt-auth", action="store_true", help="exchange keys for JWTs at /api/v1/auth/token")
    add("--jwt-ttl", type=int, default=JWT_DEFAULT_TTL, help="JWT lifetime in seconds")
    add(
        "--session-timeout",
        type=float,
        default=0.0,
        metavar="S",
        help="expire sessions without a heartbeat for S seconds (default 0: never)",
    )
    add("--test-hooks", action="store_true", help="serve the /api/v1/_test/ routes (tests only)")
    add(
        "--exit-on-stdin-eof",
        action="store_true",
        help="stop gracefully when standard input closes (EmbeddedServer: exit with the parent)",
    )
    add(
        "--sample-latency-ms",
        type=float,
        default=0.0,
        help="latency model: each asample completes no sooner than this after it was queued",
    )
    add(
        "--train-latency-ms",
        type=float,
        default=0.0,
        help="latency model: the same for forward_backward, forward and optim_step",
    )
    add("--network-delay-ms", type=float, default=0.0, help="hold every HTTP answer this long")
    add(
        "--debug-stats",
        action="store_true",
        help="serve sampling counters at GET /_debug/stats (benchmarks; not the Tinker API)",
    )
    add("--log-level", default="WARNING", help="level of the server's log (default %(default)s)")


def _settings(ns: argparse.Namespace, keys: list[str]) -> Any:
    from tinkex_actors.server.settings import ServerSettings

    rate_limits: dict[str, float] = {}
    for key, raw in ns.rate_limit:
        try:
            rate_limits[key] = float(raw)
        except ValueError:
            raise ConfigError("rate_limits", f"{raw!r} is not a number") from None
    client_config: dict[str, Any] = {}
    for name, raw in ns.client_config:
        try:
            client_config[name] = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ConfigError("client_config", f"{name}: {raw!r} is not JSON") from None
    return ServerSettings(
        data_dir=(ns.data_dir or default_data_dir()).expanduser().resolve(),
        api_keys=tuple(keys),
        host=ns.host,
        port=ns.port,
        engine=ns.engine,
        models={name: Path(path).expanduser() for name, path in ns.model},
        simulate_ms=ns.simulate_ms,
        poll_hold_seconds=ns.poll_hold_seconds,
        max_body_bytes=ns.max_body_bytes,
        threads=ns.threads,
        workers=ns.workers,
        seq_gap_timeout=ns.seq_gap_timeout,
        archive_url_ttl=ns.archive_url_ttl,
        min_ttl_seconds=ns.min_ttl_seconds,
        expiry_sweep_interval=ns.expiry_sweep_interval,
        client_config=client_config,
        rate_limits=rate_limits,
        jwt_auth=ns.jwt_auth,
        jwt_ttl=ns.jwt_ttl,
        session_timeout=ns.session_timeout,
        test_hooks=ns.test_hooks,
        sample_latency_ms=ns.sample_latency_ms,
        train_latency_ms=ns.train_latency_ms,
        network_delay_ms=ns.network_delay_ms,
        debug_stats=ns.debug_stats,
    )


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it every keep-alive response waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _say(line: str, stream: TextIO = sys.stdout) -> None:
    """One line for the operator (not the log: the generated key goes only here)."""
    stream.write(line + "\n")
    stream.flush()


def _watch_stdin(on_eof: Callable[[], None]) -> threading.Thread:
    """Call ``on_eof`` once standard input reaches end of file (the parent is gone)."""

    def watch() -> None:
        try:
            while os.read(sys.stdin.fileno(), 4096):
                pass  # nobody writes to it: anything read is ignored
        except (OSError, ValueError):
            pass  # closed or unreadable: treated like end of file
        get_logger("server").warning("tinkex.server.stdin_closed_stopping")
        on_eof()

    thread = threading.Thread(target=watch, name="tinkex-server-stdin-watch", daemon=True)
    thread.start()
    return thread


def _configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    logger.setLevel(level.upper())


def run(ns: argparse.Namespace) -> int:
    """Run the server until SIGTERM / SIGINT; returns the exit status."""
    import uvicorn

    from tinkex_actors.server.app import begin_shutdown, create_app
    from tinkex_actors.server.auth import generate_api_key

    keys = list(ns.api_key)
    generated = not keys
    if generated:
        keys.append(generate_api_key())
    try:
        settings = _settings(ns, keys)
        # Built now (cheap: no torch import) so that a bad --engine/--model stops the start;
        # the engine's heavy start() still runs in the background.
        engine = load_engine(
            settings.engine,
            data_dir=settings.data_dir,
            models=settings.models,
            simulate_ms=settings.simulate_ms,
            threads=settings.threads,
        )
        app = create_app(settings, engine_factory=lambda: engine)
    except ConfigError as exc:
        _say(f"tinkex server: {exc}", sys.stderr)
        return 2
    _configure_logging(ns.log_level)
    try:
        sock = _bind(settings.host, settings.port)
    except OSError:
        return 2
    port = sock.getsockname()[1]
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    if generated:
        _say(f"tinkex server: generated API key (use --api-key to choose): {keys[0]}")
    _say(f"tinkex server: engine {settings.engine}, data in {settings.data_dir}")
    _say(f"tinkex server: listening on http://{host}:{port}")
    if ns.port_file:
        ns.port_file.write_text(str(port))

    class _Server(uvicorn.Server):  # type: ignore[misc]  # uvicorn is untyped here
        should_exit: bool
        force_exit: bool

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # Unlike uvicorn's own handler, record nothing to re-raise: a requested stop is
            # a clean exit (status 0). Long-polls are released on the loop, not here: a
            # signal handler must not take locks the interrupted code may hold.
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True
            state = getattr(app.state, "server", None)
            if state is not None:
                state.loop.call_soon_threadsafe(begin_shutdown, app)

    config = uvicorn.Config(
        app,
        log_level=ns.log_level.lower(),
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=int(SERVER_GRACEFUL_SHUTDOWN),
        server_header=False,
    )
    server = _Server(config)
    if ns.exit_on_stdin_eof:
        _watch_stdin(lambda: server.handle_exit(signal.SIGTERM, None))
    server.run(sockets=[sock])
    sock.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the server."""
    parser = argparse.ArgumentParser(
        prog="tinkex server", description="The embedded Tinker-compatible server."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
