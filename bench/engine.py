"""Torch engine compute: a training step and a short sample on the tiny default model.

Times the engine directly (no HTTP), as the server runs it:

* ``train step``: ``forward_backward`` (cross_entropy) + ``optim_step`` on 8 datums x 128
  tokens with a rank-32 adapter on every target (attention, MLP, unembedding);
* ``forward_backward`` and ``optim_step`` separately;
* ``forward (8x128)``: ``forward_backward(forward_only=True)``;
* ``sample 32 tokens``: one sequence of 32 new tokens after a 16-token prompt (temperature 1,
  stopping only at EOS, as the server samples), KV-cached.

Each figure is the median / min / max over ``--reps`` repetitions after two warm-up runs. The
engine is built in a temporary data directory (the first start builds the tiny model; that
time is printed too) and nothing is written to the Hugging Face cache.

Run: ``.venv/bin/python -m bench.engine [--reps N] [--threads N ...]``. The engine is driven by
:class:`bench._floors.EngineFloor`, the floor of the harness's workload 6.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

from bench._drivers import Spec
from bench._floors import EngineFloor

DATUMS = 8
TOKENS = 128
SAMPLE_TOKENS = 32
PROMPT_TOKENS = 16
WARMUP = 2


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


def run(threads: int, reps: int) -> None:
    """Start an engine with ``threads`` compute threads and print its figures."""
    started = time.perf_counter()
    engine = EngineFloor()
    spec = Spec(
        datums=DATUMS,
        tokens=TOKENS,
        prompt_tokens=PROMPT_TOKENS,
        max_tokens=SAMPLE_TOKENS,
        rank=32,
        extra={"threads": threads},
    )
    engine.setup("", "", spec)
    print(f"threads={threads}  (start: {time.perf_counter() - started:.1f} s)")
    try:
        print(_row(f"train step {DATUMS}x{TOKENS}", _time(engine.step, reps)))
        print(_row("  forward_backward", _time(engine.fb, reps)))
        print(_row("  optim_step", _time(engine.optim, reps)))
        print(_row(f"forward {DATUMS}x{TOKENS}", _time(engine.forward, reps)))
        print(_row(f"sample {SAMPLE_TOKENS} tokens", _time(engine.sample, reps)))
    finally:
        engine.close()
    print(f"  (load average now: {os.getloadavg()[0]:.2f})")


def main() -> None:
    """Parse arguments and run the benchmark for each thread count."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    # Other processes on a 2-core machine move these figures a lot: say how busy it was.
    print(f"cpus={os.cpu_count()}  load average at start: {os.getloadavg()[0]:.2f}")
    for threads in args.threads:
        run(threads, args.reps)


if __name__ == "__main__":
    main()
