"""Torch engine compute: a training step and a short sample on the tiny default model.

Times the engine directly (no HTTP), as the server runs it:

* ``train step``: ``forward_backward`` (cross_entropy) + ``optim_step`` on 8 datums x 128
  tokens with a rank-32 adapter on every target (attention, MLP, unembedding);
* ``forward_backward`` and ``optim_step`` separately;
* ``forward (8x128)``: ``forward_backward(forward_only=True)``;
* ``sample 32 tokens``: one sequence of 32 new tokens after a 16-token prompt (temperature 1,
  no early stop), KV-cached.

Each figure is the median / min / max over ``--reps`` repetitions after two warm-up runs. The
engine is built in a temporary data directory (the first start builds the tiny model; that
time is printed too) and nothing is written to the Hugging Face cache.

Run: ``.venv/bin/python bench/bench_engine.py [--reps N] [--threads N ...]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tinkex_actors.server.engine_api import AdamSpec, EngineDatum, LoraSpec, SampleSpec
from tinkex_actors.server.engines.torch_engine import TorchEngine

MODEL = "tinkex/tiny-llama"
DATUMS = 8
TOKENS = 128
SAMPLE_TOKENS = 32
PROMPT_TOKENS = 16
WARMUP = 2


def _data() -> list[EngineDatum]:
    rng = np.random.default_rng(0)
    data = []
    for _ in range(DATUMS):
        seq = rng.integers(3, 2048, TOKENS + 1).astype(np.int64)
        data.append(
            EngineDatum(
                tokens=seq[:-1],
                inputs={"target_tokens": seq[1:], "weights": np.ones(TOKENS, dtype=np.float32)},
            )
        )
    return data


def _time(fn: Callable[[], object], reps: int) -> list[float]:
    for _ in range(WARMUP):
        fn()
    out = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def _row(label: str, samples: list[float]) -> str:
    return (
        f"  {label:<22} median {statistics.median(samples):7.1f} ms"
        f"   min {min(samples):7.1f}   max {max(samples):7.1f}"
    )


def run(threads: int, reps: int, data_dir: Path) -> None:
    """Start an engine with ``threads`` compute threads and print its figures."""
    started = time.perf_counter()
    engine = TorchEngine(data_dir=data_dir, threads=threads, publish_to_hub=False)
    engine.start()
    print(f"threads={threads}  (start: {time.perf_counter() - started:.1f} s)")
    try:
        engine.create_adapter("bench", MODEL, LoraSpec(rank=32, seed=0))
        engine.create_sampler("bench-sampler", MODEL, from_model_id="bench")
        data = _data()
        adam = AdamSpec(learning_rate=1e-4)

        def train() -> None:
            engine.forward_backward("bench", data, "cross_entropy", {}, forward_only=False)
            engine.optim_step("bench", adam)

        def fwdbwd() -> None:
            engine.forward_backward("bench", data, "cross_entropy", {}, forward_only=False)

        def step() -> None:
            engine.optim_step("bench", adam)

        def forward() -> None:
            engine.forward_backward("bench", data, "cross_entropy", {}, forward_only=True)

        spec = SampleSpec(
            prompt=[int(t) for t in data[0].tokens[:PROMPT_TOKENS]],
            max_tokens=SAMPLE_TOKENS,
            temperature=1.0,
            seed=1,
            stop_strings=(),
        )

        def sample() -> None:
            engine.sample("bench-sampler", spec)

        print(_row(f"train step {DATUMS}x{TOKENS}", _time(train, reps)))
        print(_row("  forward_backward", _time(fwdbwd, reps)))
        print(_row("  optim_step", _time(step, reps)))
        print(_row(f"forward {DATUMS}x{TOKENS}", _time(forward, reps)))
        print(_row(f"sample {SAMPLE_TOKENS} tokens", _time(sample, reps)))
    finally:
        engine.close()
    print(f"  (load average now: {os.getloadavg()[0]:.2f})")


def main() -> None:
    """Parse arguments and run the benchmark for each thread count."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    # Other processes on a 2-core machine move these figures a lot: say how busy it was.
    print(f"cpus={os.cpu_count()}  load average at start: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="tinkex-bench-engine-") as tmp:
        for threads in args.threads:
            run(threads, args.reps, Path(tmp))


if __name__ == "__main__":
    main()
