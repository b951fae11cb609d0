"""How big each workload is: the full run (``make bench``) and the smoke run (tests)."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Settings:
    """Sizes and repetitions of every workload.

    Attributes:
        reps: repetitions of every timed block (the table shows their median).
        calls / warmup: sequential calls per block, and untimed calls first.
        samples / fan_threads: samples per fan-out, threads our SDK submits from.
        datums / tokens: the big-batch encode.
        steps / simulate_ms: pipelined training steps, the null engine's simulated work.
        mixed: requests of the footprint's mixed phase.
        import_reps: fresh interpreters per SDK for the import time.
        exchanges: HTTP exchanges per transport block.
        torch_steps / torch_samples: calls per block of the embedded-server workload.
        load_samples / sample_latency_ms / network_delay_ms / train_latency_ms: the latency
            workload (7): samples per burst against a server whose samples take
            ``sample_latency_ms`` and whose answers cross a ``network_delay_ms`` hop.
        load_reps: repetitions of the latency workload (each block takes seconds to minutes).
        load_steps: unloaded training steps per block (the latency workload's baseline).
        idle_limit: how long to wait for a client's threads to go back to idle.
        server_cpus / client_cpus: CPU pinning (None: none).
        parallel: run independent workloads at the same time (smoke only: it spoils timings).
    """

    reps: int = 5
    calls: int = 200
    warmup: int = 20
    samples: int = 2000
    fan_threads: int = 32
    datums: int = 128
    tokens: int = 2048
    steps: int = 20
    simulate_ms: float = 50.0
    mixed: int = 10_000
    import_reps: int = 7
    exchanges: int = 1000
    torch_steps: int = 4
    torch_samples: int = 4
    load_samples: int = 2000
    sample_latency_ms: float = 2000.0
    network_delay_ms: float = 10.0
    train_latency_ms: float = 0.0
    load_reps: int = 3
    load_steps: int = 5
    idle_limit: float = 90.0
    server_cpus: tuple[int, ...] | None = None
    client_cpus: tuple[int, ...] | None = None
    parallel: bool = False


FULL = Settings()

#: A few seconds per workload: keeps the harness working in ``make test``.
SMOKE = replace(
    FULL,
    reps=1,
    calls=3,
    warmup=1,
    samples=24,
    fan_threads=4,
    datums=4,
    tokens=64,
    steps=2,
    simulate_ms=5.0,
    mixed=24,
    import_reps=1,
    exchanges=20,
    torch_steps=1,
    torch_samples=1,
    load_samples=30,
    sample_latency_ms=300.0,
    network_delay_ms=2.0,
    load_reps=1,
    load_steps=1,
    idle_limit=1.0,
    parallel=True,
)
