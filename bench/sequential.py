"""Workload 1: sequential latency, one call at a time, each waited for.

``calls`` x forward_backward (1 datum of 16 tokens, cross_entropy) then ``.result()``;
likewise optim_step and sample (``max_tokens=8``, 4-token prompt). Four clients, each in its
own process against one null-engine server: our SDK, the official SDK, and the two floors
doing the same submit + ``retrieve_future`` exchanges by hand: a default ``requests.Session``
(the floor of the targets: our HTTP library with nothing around it) and ``http.client``
(shown beside it). Blocks of ``calls`` calls run client after client in a rotated order,
``reps`` times; a row holds the median / min / max of the per-call wall time (and of the
client CPU per call) over the blocks.
"""

from __future__ import annotations

from bench._common import Progress, Row, Stat, Target
from bench._drivers import Spec
from bench._settings import Settings
from bench._workers import Worker, start_all
from tinkex_actors.server.embedded import EmbeddedServer

CLIENTS = ("ours", "official", "http.client", "requests")
CALLS = (
    ("fb", "forward_backward 1x16"),
    ("optim", "optim_step"),
    ("sample", "sample 8 tokens"),
)


def start(settings: Settings, server: EmbeddedServer) -> dict[str, Worker]:
    """The four clients, set up (they serve the fan-out workload too)."""
    spec = Spec(threads=settings.fan_threads)
    return start_all(CLIENTS, server.base_url, spec, settings.client_cpus)


def measure(
    settings: Settings, workers: dict[str, Worker], progress: Progress
) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """Per call and client: ``(wall s, CPU s)`` per call for each block."""
    out: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for call, label in CALLS:
        progress(f"sequential {label}")
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in CLIENTS}
        for worker in workers.values():
            worker.ask("run", call=call, n=settings.warmup)
        for rep in range(settings.reps):
            order = CLIENTS[rep % len(CLIENTS) :] + CLIENTS[: rep % len(CLIENTS)]
            for name in order:
                reply = workers[name].ask("run", call=call, n=settings.calls)
                n = settings.calls
                results[name].append((reply["wall_s"] / n, reply["cpu_s"] / n))
        out[call] = results
    return out


def run(settings: Settings, workers: dict[str, Worker], progress: Progress) -> list[Row]:
    """The sequential rows: wall ms per call (with targets) and client CPU ms per call."""
    data = measure(settings, workers, progress)
    rows = []
    for call, label in CALLS:
        results = data[call]

        def stat(
            name: str, index: int, results: dict[str, list[tuple[float, float]]] = results
        ) -> Stat:
            return Stat.of(r[index] * 1000 for r in results[name])

        # The floor is a bare requests.Session doing the same exchanges (our HTTP library);
        # http.client is shown beside it.
        bare_wall, bare_cpu = stat("http.client", 0), stat("http.client", 1)
        rows.append(
            Row(
                f"1 seq {label}",
                "ms/call",
                stat("ours", 0),
                stat("official", 0),
                stat("requests", 0),
                floor_label=f"requests (http.client {bare_wall.median:.2f})",
                extra={"http.client": bare_wall},
                targets=[Target("official", 0.5), Target("floor", 1.3)],
            )
        )
        rows.append(
            Row(
                f"1 seq {label}: client CPU",
                "ms/call",
                stat("ours", 1),
                stat("official", 1),
                stat("requests", 1),
                floor_label=f"requests (http.client {bare_cpu.median:.2f})",
                extra={"http.client": bare_cpu},
            )
        )
    return rows
