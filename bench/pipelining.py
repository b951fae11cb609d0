"""Workload 4: pipelining against simulated engine work.

A null-engine server started with ``--simulate-ms 50`` sleeps 50 ms in every forward_backward
and optim_step, serialized per model. Each client runs ``steps`` (20) training steps of
(forward_backward of 1 datum x 16 tokens; optim_step; wait for both): a client that submits
the optim_step without waiting for the forward_backward keeps the engine busy, so the best
possible wall time is ``steps x 2 x 50 ms``. Figure: wall time / that ideal. Clients: ours,
the official SDK, and the ``http.client`` floor (submit both, then poll both, on one
connection).
"""

from __future__ import annotations

from bench._common import Progress, Row, Stat, Target
from bench._drivers import Spec
from bench._servers import bench_server
from bench._settings import Settings
from bench._workers import close_all, start_all

CLIENTS = ("ours", "official", "http.client")


def run(settings: Settings, progress: Progress) -> list[Row]:
    """Wall / ideal (target: <= 1.05)."""
    progress(f"pipelining {settings.steps} steps @ {settings.simulate_ms:g} ms")
    ideal = settings.steps * 2 * settings.simulate_ms / 1000
    ratios: dict[str, list[float]] = {name: [] for name in CLIENTS}
    with bench_server(
        "null", extra=(f"--simulate-ms={settings.simulate_ms:g}",), cpus=settings.server_cpus
    ) as server:
        workers = start_all(CLIENTS, server.base_url, Spec(sampling=False), settings.client_cpus)
        try:
            for worker in workers.values():
                worker.ask("run", call="step", n=2)
            for rep in range(settings.reps):
                order = CLIENTS[rep % len(CLIENTS) :] + CLIENTS[: rep % len(CLIENTS)]
                for name in order:
                    reply = workers[name].ask("run", call="step", n=settings.steps)
                    ratios[name].append(reply["wall_s"] / ideal)
        finally:
            close_all(workers)
    return [
        Row(
            f"4 pipelining {settings.steps} steps @{settings.simulate_ms:g} ms",
            "wall/ideal",
            Stat.of(ratios["ours"]),
            Stat.of(ratios["official"]),
            Stat.of(ratios["http.client"]),
            targets=[Target("absolute", 1.05)],
            digits=3,
        )
    ]
