"""Workload 5: footprint (memory, threads) and import time.

Each SDK runs in a fresh process of its own (so neither pollutes the other's figures): it
creates its clients (``probe`` "start"), fans out ``samples`` samples as in workload 2
("after fan-out"), then runs ``mixed`` requests in rounds of (forward_backward; optim_step;
8 samples; wait for all ten) ("after mixed"). RSS is ``VmRSS`` and threads are OS
threads (``/proc/self/status``), after a ``gc.collect()``, taken by each worker as soon as its
phase ends. The two processes run at the same time (their timings are not used here).

Import time: ``import tinkex_actors`` vs ``import tinker`` in fresh interpreters, alternating,
``import_reps`` each (wall time of the import statement alone).
"""

from __future__ import annotations

import json

from bench._common import Progress, Row, Stat, Target, python_command, run_quiet
from bench._drivers import Spec
from bench._settings import Settings
from bench._workers import close_all, start_all
from tinkex_actors.server.embedded import EmbeddedServer

CLIENTS = ("ours", "official")
_IMPORT = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"


def import_times(reps: int) -> dict[str, list[float]]:
    """Seconds to import each SDK in fresh interpreters (alternating order)."""
    times: dict[str, list[float]] = {"tinkex_actors": [], "tinker": []}
    if reps > 1:  # warm the file cache first (not in the one-rep smoke run)
        run_quiet(python_command("-c", "import tinkex_actors, tinker"), 120)
    for rep in range(reps):
        modules = ["tinkex_actors", "tinker"]
        if rep % 2:
            modules.reverse()
        for module in modules:
            out = run_quiet(python_command("-c", _IMPORT.format(module=module)), 120)
            times[module].append(float(out.strip().splitlines()[-1]))
    return times


def measure(
    settings: Settings, server: EmbeddedServer, progress: Progress
) -> dict[str, dict[str, float]]:
    """RSS (MiB) and threads at start, after the fan-out and after the mixed requests."""
    progress(f"footprint: {settings.samples} samples then {settings.mixed} mixed requests")
    spec = Spec(threads=settings.fan_threads)
    workers = start_all(CLIENTS, server.base_url, spec, settings.client_cpus)
    probes: dict[str, dict[str, float]] = {name: {} for name in CLIENTS}
    try:
        for phase, op, args in (
            ("start", None, {}),
            ("fanout", "fanout", {"n": settings.samples}),
            ("mixed", "mixed", {"n": settings.mixed}),
        ):
            if op is None:
                for name, worker in workers.items():
                    probe = worker.ask("probe")
                    probes[name][f"rss_{phase}"] = probe["rss_mb"]
                    probes[name][f"threads_{phase}"] = probe["threads"]
                continue
            for worker in workers.values():
                worker.send(op, **args)
            for name, worker in workers.items():
                reply = worker.receive()  # measured by the worker as soon as it was done
                probes[name][f"peak_threads_{phase}"] = reply["peak_threads"]
                probes[name][f"rss_{phase}"] = reply["rss_mb_end"]
                probes[name][f"threads_{phase}"] = reply["threads_end"]
    finally:
        close_all(workers)
    return probes


def run(settings: Settings, server: EmbeddedServer, progress: Progress) -> list[Row]:
    """RSS and thread growth (targets: < 20 MiB, 0 threads) and import time."""
    probes = measure(settings, server, progress)
    progress("import time")
    imports = import_times(settings.import_reps)

    def growth(name: str, later: str, earlier: str) -> Stat:
        return Stat.of([probes[name][later] - probes[name][earlier]])

    ours, official = probes["ours"], probes["official"]
    return [
        Row(
            f"5 RSS at start -> after {settings.samples} samples",
            "MiB",
            growth("ours", "rss_fanout", "rss_start"),
            growth("official", "rss_fanout", "rss_start"),
            note=(
                f"ours {ours['rss_start']:.1f} -> {ours['rss_fanout']:.1f}; official "
                f"{official['rss_start']:.1f} -> {official['rss_fanout']:.1f} MiB"
            ),
            digits=1,
            ratios=False,
        ),
        Row(
            f"5 RSS growth over {settings.mixed} mixed requests",
            "MiB",
            growth("ours", "rss_mixed", "rss_fanout"),
            growth("official", "rss_mixed", "rss_fanout"),
            targets=[Target("absolute", 20.0)],
            note=(
                f"ours {ours['rss_fanout']:.1f} -> {ours['rss_mixed']:.1f}; official "
                f"{official['rss_fanout']:.1f} -> {official['rss_mixed']:.1f} MiB"
            ),
            digits=1,
            ratios=False,
        ),
        Row(
            f"5 threads at start -> after {settings.samples} samples",
            "threads",
            growth("ours", "threads_fanout", "threads_start"),
            growth("official", "threads_fanout", "threads_start"),
            note=(
                f"ours {ours['threads_start']:.0f} -> {ours['threads_fanout']:.0f} "
                f"(peak {ours['peak_threads_fanout']:.0f}); official "
                f"{official['threads_start']:.0f} -> {official['threads_fanout']:.0f} "
                f"(peak {official['peak_threads_fanout']:.0f})"
            ),
            digits=0,
            ratios=False,
        ),
        Row(
            f"5 thread growth over {settings.mixed} mixed requests",
            "threads",
            growth("ours", "threads_mixed", "threads_fanout"),
            growth("official", "threads_mixed", "threads_fanout"),
            targets=[Target("absolute", 0.0)],
            note=(
                f"ours {ours['threads_fanout']:.0f} -> {ours['threads_mixed']:.0f}; official "
                f"{official['threads_fanout']:.0f} -> {official['threads_mixed']:.0f}"
            ),
            digits=0,
            ratios=False,
        ),
        Row(
            "5 import time",
            "s",
            Stat.of(imports["tinkex_actors"]),
            Stat.of(imports["tinker"]),
            targets=[Target("official", 1.0)],
            digits=3,
        ),
    ]


if __name__ == "__main__":
    print(json.dumps(import_times(5), indent=2))
