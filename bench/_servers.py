"""Benchmark servers: :class:`~tinkex_actors.server.embedded.EmbeddedServer` processes.

Each accepts :data:`~bench._common.API_KEY`, has its own temporary data directory and Hugging
Face cache (the user's is never touched), and with ``cpus`` runs pinned to those CPUs.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence

from bench._common import API_KEY
from tinkex_actors.server.embedded import EmbeddedServer

READY_TIMEOUT = 120.0


@contextlib.contextmanager
def pinned(cpus: Sequence[int] | None) -> Iterator[None]:
    """Restrict this thread to ``cpus`` for the block, so processes it starts inherit them."""
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(cpus))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@contextlib.contextmanager
def bench_server(
    engine: str = "null", extra: Sequence[str] = (), cpus: Sequence[int] | None = None
) -> Iterator[EmbeddedServer]:
    """A running ``engine`` server with ``extra`` flags (``--simulate-ms=50``), pinned to
    ``cpus``; stopped at the end of the block, its log's tail printed if the block failed."""
    with tempfile.TemporaryDirectory(prefix=f"tinkex-bench-{engine}-hf-") as hf_home:
        server = EmbeddedServer(
            engine,
            api_key=API_KEY,
            extra_args=extra,
            env={**os.environ, "HF_HOME": hf_home},
            ready_timeout=READY_TIMEOUT,
        )
        with pinned(cpus):
            server.start()
        try:
            yield server
        except BaseException:
            sys.stderr.write(f"--- {engine} server log (tail) ---\n{server.log_tail()}\n")
            raise
        finally:
            server.close()
