"""Workload 2: sampling fan-out, ``samples`` samples submitted at once.

The clients are the sequential workload's processes (set up, warmed). Our SDK submits from
``fan_threads`` (32) threads, each submitting its share of
``sample(max_tokens=8)`` calls and then waiting for them; the official SDK submits all of
them from one thread with its blocking ``sample()`` (its background loop runs them
concurrently) and then waits; the floor is 32 threads each with its own ``http.client``
connection doing submit + ``retrieve_future`` in a loop. Each rep runs the three clients one
after another (rotated order), each in its own process against the same null-engine server.
Figures: samples per second (wall), client CPU per sample, peak OS threads.
"""

from __future__ import annotations

from bench._common import Progress, Row, Stat, Target
from bench._settings import Settings
from bench._workers import Worker

CLIENTS = ("ours", "official", "http.client")


def run(settings: Settings, workers: dict[str, Worker], progress: Progress) -> list[Row]:
    """Samples/s (target: >= 2x the official SDK) and client CPU per sample.

    ``workers`` are set-up clients (the sequential workload's) holding at least
    :data:`CLIENTS`, made with ``Spec(threads=settings.fan_threads)``.
    """
    progress(f"fan-out {settings.samples} samples")
    rate: dict[str, list[float]] = {name: [] for name in CLIENTS}
    cpu: dict[str, list[float]] = {name: [] for name in CLIENTS}
    peak: dict[str, list[float]] = {name: [] for name in CLIENTS}
    for name in CLIENTS:
        workers[name].ask("fanout", n=max(settings.fan_threads, settings.samples // 10))
    for rep in range(settings.reps):
        order = CLIENTS[rep % len(CLIENTS) :] + CLIENTS[: rep % len(CLIENTS)]
        for name in order:
            reply = workers[name].ask("fanout", n=settings.samples)
            done = reply["value"]
            rate[name].append(done / reply["wall_s"])
            cpu[name].append(reply["cpu_s"] / done * 1000)
            peak[name].append(reply["peak_threads"])
    return [
        Row(
            f"2 fan-out {settings.samples} samples",
            "samples/s",
            Stat.of(rate["ours"]),
            Stat.of(rate["official"]),
            Stat.of(rate["http.client"]),
            targets=[Target("official_min", 2.0)],
            digits=0,
        ),
        Row(
            "2 fan-out: client CPU",
            "ms/sample",
            Stat.of(cpu["ours"]),
            Stat.of(cpu["official"]),
            Stat.of(cpu["http.client"]),
            digits=3,
        ),
        Row(
            "2 fan-out: peak threads",
            "threads",
            Stat.of(peak["ours"]),
            Stat.of(peak["official"]),
            Stat.of(peak["http.client"]),
            digits=0,
        ),
    ]
