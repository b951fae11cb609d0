"""Workload 6: the embedded server on the torch engine (tiny model, real LoRA training).

A torch-engine server (default model ``tinkex/tiny-llama``: 2 layers, hidden 128, vocabulary
2048) in its own process; rank-32 LoRA. Clients: ours and the official SDK (each in its own
process), and the floor: the same engine called in-process with no HTTP
(:class:`bench._floors.EngineFloor`, the engine's default thread count). Figures: a
training step (forward_backward of 8 datums x 128 tokens + optim_step, both submitted, then
both waited for) and one sample of 32 new tokens after a 16-token prompt, wall ms per call,
median over blocks of ``torch_steps`` / ``torch_samples`` calls in a rotated order.
"""

from __future__ import annotations

from bench._common import Progress, Row, Stat
from bench._drivers import Spec
from bench._servers import bench_server
from bench._settings import Settings
from bench._workers import close_all, start_all

CLIENTS = ("ours", "official", "engine")
SPEC = Spec(datums=8, tokens=128, prompt_tokens=16, max_tokens=32, rank=32)


def run(settings: Settings, progress: Progress) -> list[Row]:
    """Training step and sample latency through the embedded server."""
    progress("embedded torch server: starting")
    results: dict[str, dict[str, list[float]]] = {
        call: {name: [] for name in CLIENTS} for call in ("step", "sample")
    }
    with bench_server("torch", cpus=settings.server_cpus) as server:
        workers = start_all(CLIENTS, server.base_url, SPEC, settings.client_cpus)
        try:
            for call, n in (("step", settings.torch_steps), ("sample", settings.torch_samples)):
                progress(f"embedded torch server: {call}")
                for worker in workers.values():
                    worker.ask("run", call=call, n=1)
                for rep in range(settings.reps):
                    order = CLIENTS[rep % len(CLIENTS) :] + CLIENTS[: rep % len(CLIENTS)]
                    for name in order:
                        reply = workers[name].ask("run", call=call, n=n)
                        results[call][name].append(reply["wall_s"] / n * 1000)
        finally:
            close_all(workers)
    step, sample = results["step"], results["sample"]
    return [
        Row(
            "6 torch train step 8x128",
            "ms/step",
            Stat.of(step["ours"]),
            Stat.of(step["official"]),
            Stat.of(step["engine"]),
            floor_label="engine, no HTTP",
            digits=1,
        ),
        Row(
            "6 torch sample 32 tokens",
            "ms/call",
            Stat.of(sample["ours"]),
            Stat.of(sample["official"]),
            Stat.of(sample["engine"]),
            floor_label="engine, no HTTP",
            digits=1,
        ),
    ]
