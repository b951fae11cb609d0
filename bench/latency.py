"""Workload 7: where users live. Samples that take seconds, behind a network hop.

The hosted service takes seconds per sample and every request crosses the network; the
embedded server answers in microseconds. This workload runs a null-engine server with the
latency model (``--sample-latency-ms 2000 --network-delay-ms 10``: every sample completes
2 s after it was queued, all of them in parallel, and every HTTP answer is held 10 ms), in
two modes:

* **batched**: the server announces ``sample_use_retrieve_futures`` (its default), so the
  official SDK waits for all its samples with one ``retrieve_futures`` long poll per
  sampling session;
* **per-future**: ``--client-config sample_use_retrieve_futures=false``: each sample is
  awaited with its own ``retrieve_future`` long poll.

In each mode, per repetition (``load_reps``, rotated order):

* **burst**: ``load_samples`` (2,000) ``sample()`` calls submitted at once from one thread,
  then every result awaited. Figures: wall time, the server's peak of samples in flight
  (submitted and not yet delivered, from its ``--debug-stats`` counters), the client's peak
  OS threads, client CPU per sample and RSS growth (at the end of the block, over the RSS
  right after setup: what holding the samples left behind). The bare client (floor)
  submits over 32 ``http.client`` connections, waits with ``retrieve_futures`` and fetches the
  payloads; its submission time defines the **ideal**: sample latency + the time to submit
  (nothing can finish sooner than the last submission plus one latency).
* **training step under load**: ``load_samples`` samples submitted, then (once they are in
  flight) one forward_backward + optim_step, timed alone; against the same step on an idle
  client (``load_steps`` steps).

After its last per-future block, each SDK's process is watched until its thread count is back
to what it was right after setup (**threads back to idle**, at most ``idle_limit``, 90 s).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench._common import API_KEY, Progress, Row, Stat, Target
from bench._drivers import Spec
from bench._servers import bench_server
from bench._settings import Settings
from bench._workers import Worker, close_all, start_all

__all__ = ["MODES", "Figures", "measure", "rows_of", "run", "server_flags", "server_stats"]

CLIENTS = ("ours", "official")
FLOOR = "http.client"
STATS_PATH = "/_debug/stats"
#: Per mode: its name and the server flags that make it.
MODES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("batched", ()),
    ("per-future", ("--client-config=sample_use_retrieve_futures=false",)),
)


def _series() -> dict[str, list[float]]:
    return {name: [] for name in (*CLIENTS, FLOOR)}


@dataclass
class Figures:
    """One mode's measurements: per client, one value per repetition."""

    wall: dict[str, list[float]] = field(default_factory=_series)
    peak_in_flight: dict[str, list[float]] = field(default_factory=_series)
    threads: dict[str, list[float]] = field(default_factory=_series)
    cpu_ms: dict[str, list[float]] = field(default_factory=_series)
    rss_growth: dict[str, list[float]] = field(default_factory=_series)
    step_loaded: dict[str, list[float]] = field(default_factory=_series)
    step_idle: dict[str, list[float]] = field(default_factory=_series)
    ideal: list[float] = field(default_factory=list)
    back_to_idle: dict[str, list[float]] = field(default_factory=_series)


def server_flags(settings: Settings, extra: Sequence[str] = ()) -> tuple[str, ...]:
    """The latency model's flags (plus ``--debug-stats`` and ``extra``)."""
    return (
        f"--sample-latency-ms={settings.sample_latency_ms:g}",
        f"--network-delay-ms={settings.network_delay_ms:g}",
        f"--train-latency-ms={settings.train_latency_ms:g}",
        "--debug-stats",
        *extra,
    )


def server_stats(base_url: str, *, reset: bool = False) -> dict[str, int]:
    """The server's sampling counters (``reset``: restart the peaks first)."""
    request = urllib.request.Request(
        f"{base_url}{STATS_PATH}" + ("/reset" if reset else ""),
        method="POST" if reset else "GET",
        headers={"X-API-Key": API_KEY},
    )
    with urllib.request.urlopen(request, timeout=60) as reply:
        stats: dict[str, int] = json.loads(reply.read())
    return stats


def _burst(
    settings: Settings,
    name: str,
    worker: Worker,
    base_url: str,
    figures: Figures,
    rss_setup: float,
) -> None:
    n = settings.load_samples
    server_stats(base_url, reset=True)
    if name == FLOOR:
        reply = worker.ask("floor_burst", n=n)
        figures.wall[name].append(reply["wall_s"])
        figures.ideal.append(settings.sample_latency_ms / 1000 + reply["submit_s"])
    else:
        reply = worker.ask("burst", n=n)
        figures.wall[name].append(reply["wall_s"])
        figures.threads[name].append(reply["peak_threads"])
        figures.cpu_ms[name].append(reply["cpu_s"] / n * 1000)
        figures.rss_growth[name].append(reply["rss_mb_end"] - rss_setup)
    figures.peak_in_flight[name].append(server_stats(base_url)["samples_in_flight_peak"])


def measure(settings: Settings, mode: str, extra: Sequence[str], progress: Progress) -> Figures:
    """One mode: its own server and client processes."""
    figures = Figures()
    n = settings.load_samples
    settle = min(0.5, settings.sample_latency_ms / 4000)
    flags = server_flags(settings, extra)
    with bench_server("null", extra=flags, cpus=settings.server_cpus) as server:
        spec = Spec(threads=settings.fan_threads)
        workers = start_all((*CLIENTS, FLOOR), server.base_url, spec, settings.client_cpus)
        try:
            probes = {name: workers[name].ask("probe") for name in (*CLIENTS, FLOOR)}
            idle = {name: probe["threads"] for name, probe in probes.items()}
            warm = max(4, n // 20)
            for name in CLIENTS:
                workers[name].ask("burst", n=warm)
                workers[name].ask("run", call="step", n=1)
            workers[FLOOR].ask("floor_burst", n=warm)
            order = (*CLIENTS, FLOOR)
            watched: list[str] = []
            for rep in range(settings.load_reps):
                progress(f"latency {mode}: burst of {n} samples, rep {rep + 1}")
                rotated = order[rep % len(order) :] + order[: rep % len(order)]
                for name in rotated:
                    rss_setup = probes[name]["rss_mb"]
                    _burst(settings, name, workers[name], server.base_url, figures, rss_setup)
                progress(f"latency {mode}: training step under load, rep {rep + 1}")
                last = rep == settings.load_reps - 1
                for name in rotated:
                    if name == FLOOR:
                        continue
                    steps = settings.load_steps
                    reply = workers[name].ask("run", call="step", n=steps)
                    figures.step_idle[name].append(reply["wall_s"] / steps * 1000)
                    reply = workers[name].ask("loaded_step", n=n, settle=settle)
                    figures.step_loaded[name].append(reply["step_s"] * 1000)
                    if mode == "per-future" and last:
                        # Its last block is over: watch its threads from now on (the next
                        # client's block runs meanwhile; the watcher only sleeps and reads
                        # /proc).
                        limit = settings.idle_limit
                        workers[name].send("idle_wait", baseline=idle[name], limit=limit)
                        watched.append(name)
            if watched:
                progress(f"latency {mode}: waiting for the clients' threads to go idle")
            for name in watched:
                figures.back_to_idle[name].append(workers[name].receive()["value"])
        finally:
            close_all(workers)
    return figures


def _stat(values: list[float]) -> Stat | None:
    return Stat.of(values) if values else None


def rows_of(settings: Settings, mode: str, figures: Figures) -> list[Row]:
    """The table rows of one mode."""
    n, latency = settings.load_samples, settings.sample_latency_ms
    ours, official = "ours", "official"
    if mode == "batched":
        return [
            Row(
                f"7 burst of {n} samples @{latency:g} ms: wall",
                "s",
                _stat(figures.wall[ours]),
                _stat(figures.wall[official]),
                _stat(figures.ideal),
                floor_label="ideal",
                extra={"bare client": Stat.of(figures.wall[FLOOR])},
                targets=[Target("official", 0.5), Target("floor", 2.0)],
            ),
            Row(
                "7 burst: server peak in flight",
                "samples",
                _stat(figures.peak_in_flight[ours]),
                _stat(figures.peak_in_flight[official]),
                _stat(figures.peak_in_flight[FLOOR]),
                floor_label="bare client",
                digits=0,
            ),
            Row(
                "7 burst: peak client threads",
                "threads",
                _stat(figures.threads[ours]),
                _stat(figures.threads[official]),
                targets=[Target("absolute", 64)],
                digits=0,
            ),
            Row(
                "7 burst: client CPU",
                "ms/sample",
                _stat(figures.cpu_ms[ours]),
                _stat(figures.cpu_ms[official]),
                digits=3,
            ),
            Row(
                "7 burst: RSS growth",
                "MiB",
                _stat(figures.rss_growth[ours]),
                _stat(figures.rss_growth[official]),
                targets=[Target("absolute", 50)],
                digits=1,
                ratios=False,
            ),
            Row(
                f"7 train step, {n} samples in flight",
                "ms",
                _stat(figures.step_loaded[ours]),
                _stat(figures.step_loaded[official]),
                _stat(figures.step_idle[ours]),
                floor_label="ours idle",
                extra={"official idle": Stat.of(figures.step_idle[official])},
                targets=[Target("official", 0.5), Target("floor", 1.5)],
                digits=1,
            ),
        ]
    return [
        Row(
            "7 per-future polling: burst wall",
            "s",
            _stat(figures.wall[ours]),
            _stat(figures.wall[official]),
            _stat(figures.ideal),
            floor_label="ideal",
            targets=[Target("official", 0.5), Target("floor", 2.0)],
        ),
        Row(
            "7 per-future polling: peak client threads",
            "threads",
            _stat(figures.threads[ours]),
            _stat(figures.threads[official]),
            digits=0,
        ),
        Row(
            "7 per-future polling: train step under load",
            "ms",
            _stat(figures.step_loaded[ours]),
            _stat(figures.step_loaded[official]),
            _stat(figures.step_idle[ours]),
            floor_label="ours idle",
            extra={"official idle": Stat.of(figures.step_idle[official])},
            targets=[Target("official", 0.5), Target("floor", 1.5)],
            digits=1,
        ),
        Row(
            "7 per-future polling: threads back to idle",
            "s",
            _stat(figures.back_to_idle[ours]),
            _stat(figures.back_to_idle[official]),
            targets=[Target("absolute", 60)],
            digits=1,
            ratios=False,
        ),
    ]


def run(settings: Settings, progress: Progress) -> list[Row]:
    """Both modes, one after the other; their rows."""
    rows: list[Row] = []
    for mode, extra in MODES:
        rows += rows_of(settings, mode, measure(settings, mode, extra, progress))
    return rows


def _main(argv: list[str] | None = None) -> None:
    import argparse
    import sys
    from dataclasses import replace

    from bench._common import format_table
    from bench._settings import FULL

    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__)
    parser.add_argument("--samples", type=int, default=FULL.load_samples)
    parser.add_argument("--reps", type=int, default=FULL.load_reps)
    parser.add_argument("--sample-latency-ms", type=float, default=FULL.sample_latency_ms)
    parser.add_argument("--network-delay-ms", type=float, default=FULL.network_delay_ms)
    args = parser.parse_args(argv)
    settings = replace(
        FULL,
        load_samples=args.samples,
        load_reps=args.reps,
        sample_latency_ms=args.sample_latency_ms,
        network_delay_ms=args.network_delay_ms,
    )

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    print(format_table(run(settings, progress)))


if __name__ == "__main__":
    _main()
