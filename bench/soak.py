"""The soak: mixed training and sampling against the null engine, watching for leaks.

One ServiceClient trains without pause (forward_backward + optim_step), saves sampler weights
every few seconds and swaps its sampling client for one over the new weights (closing the old
one), saves its state now and then; sampling threads keep waves of concurrent samples going
on the current sampler; a churn thread opens and closes a whole second ServiceClient (session,
sampling client, samples) every few seconds. After a warm-up the process's RSS and thread
count are sampled every second.

It passes when, measured after the warm-up: RSS grew less than ``--max-rss-growth-mb``
(20 MB), the thread count stayed flat (the tenant's worker pool, which grows lazily with the
concurrency, stayed within its bound; the other threads' last-third median is at most their
first third's plus 2), nothing failed, and every thread the SDK started was gone after the
clients closed.

::

    make soak                                   # 10 minutes on an embedded null server
    .venv/bin/python bench/soak.py --seconds 60
    TINKER_API_KEY=tml-... .venv/bin/python bench/soak.py --base-url http://127.0.0.1:8000

Prints one table and, with ``--json PATH``, writes the report as JSON. Exit status 0 when it
passed, 1 when it did not.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tinkex_actors import Config, SamplingClient, ServiceClient, types
from tinkex_actors.server.embedded import EmbeddedServer

MODEL = "tinkex/tiny-llama"
#: Bound on every wait: a call that takes longer counts as an error (a hang).
WAIT = 60.0
ADAM = types.AdamParams(learning_rate=1e-3)
PROMPT = types.ModelInput.from_ints([11, 12, 13, 14, 15, 16, 17, 18])
PARAMS = types.SamplingParams(max_tokens=16, temperature=0.8, seed=1)
#: The thread-count tolerance of "flat": the last third's median may exceed the first's by this.
THREAD_SLACK = 2


def pool_prefix(config: Config) -> str:
    """The name prefix of the worker threads of ``config``'s tenant pool."""
    return f"tinkex-{config.tenant_id[:8]}-"


def _batch() -> list[types.Datum]:
    data = []
    for row in range(4):
        tokens = [(row * 37 + i * 11) % 2000 + 3 for i in range(17)]
        data.append(
            types.Datum(
                types.ModelInput.from_ints(tokens[:-1]),
                {"target_tokens": tokens[1:], "weights": [1.0] * 16},
            )
        )
    return data


def rss_mb() -> float:
    """This process's resident set size now, in MiB (Linux ``/proc``)."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """This process's highest resident set size so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def process_rss_mb(pid: int) -> float | None:
    """Another process's resident set size, in MiB (None when unreadable)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass
class Report:
    """What a soak measured (sizes in MiB, times in seconds)."""

    seconds: float
    warmup: float
    steps: int = 0
    samples: int = 0
    sampler_swaps: int = 0
    state_saves: int = 0
    sessions_churned: int = 0
    errors: list[str] = field(default_factory=list)
    rss_start: float = 0.0
    rss_end: float = 0.0
    rss_peak: float = 0.0
    rss_growth: float = 0.0
    max_rss_growth: float = 20.0
    #: The process's lifetime peak RSS (``ru_maxrss``) at the end of the warm-up and at the end.
    maxrss_warmup: float = 0.0
    maxrss_end: float = 0.0
    threads_before: int = 0
    threads_start: int = 0
    threads_end: int = 0
    threads_first_third_peak: int = 0
    threads_last_third_peak: int = 0
    threads_first_third_median: float = 0.0
    threads_last_third_median: float = 0.0
    threads_after_close: int = 0
    server_rss_start: float | None = None
    server_rss_end: float | None = None
    #: The tenant's worker pool: its bound (``Config.http_pool_size``) and its peak size.
    pool_bound: int = 0
    pool_peak: int = 0
    rss_samples: list[float] = field(default_factory=list)
    thread_samples: list[int] = field(default_factory=list)
    #: The thread counts without the tenant's pool workers, sampled with ``thread_samples``.
    other_thread_samples: list[int] = field(default_factory=list)

    @property
    def threads_flat(self) -> bool:
        """Whether the thread count did not grow over the run.

        The tenant's worker pool starts threads lazily up to its bound as the concurrency
        peaks, so it may grow during the run and only has to stay within that bound. Every
        other thread is compared by median, first third against last: the churning second
        client adds a few threads for a moment every few seconds, which a peak catches or
        misses by chance; a leak moves the median.
        """
        samples = self.other_thread_samples
        if not samples:
            return self.pool_peak <= self.pool_bound
        third = max(1, len(samples) // 3)
        first = statistics.median(samples[:third])
        last = statistics.median(samples[-third:])
        return last <= first + THREAD_SLACK and self.pool_peak <= self.pool_bound

    @property
    def passed(self) -> bool:
        """Every criterion held."""
        return (
            not self.errors
            and self.rss_growth < self.max_rss_growth
            and self.threads_flat
            and self.threads_after_close <= self.threads_before
            and self.steps > 0
            and self.samples > 0
        )

    def to_json(self) -> dict[str, Any]:
        """The report with the verdicts."""
        data = asdict(self)
        data.update(threads_flat=self.threads_flat, passed=self.passed)
        return data

    def table(self) -> str:
        """A human-readable summary."""
        mib = "MiB"
        rows = [
            ("duration", f"{self.seconds:.0f} s (warm-up {self.warmup:.0f} s)"),
            ("training steps", f"{self.steps}"),
            ("samples", f"{self.samples}"),
            ("sampler swaps / state saves", f"{self.sampler_swaps} / {self.state_saves}"),
            ("sessions opened and closed", f"{self.sessions_churned}"),
            ("errors", f"{len(self.errors)}"),
            (
                "client RSS after warm-up / end / peak",
                f"{self.rss_start:.1f} / {self.rss_end:.1f} / {self.rss_peak:.1f} {mib}",
            ),
            ("client RSS growth", f"{self.rss_growth:+.1f} {mib} (limit {self.max_rss_growth})"),
            (
                "client peak RSS (lifetime) after warm-up / end",
                f"{self.maxrss_warmup:.1f} / {self.maxrss_end:.1f} {mib}",
            ),
            (
                "threads before / after warm-up / end",
                f"{self.threads_before} / {self.threads_start} / {self.threads_end}",
            ),
            (
                "threads median (peak), first / last third",
                (
                    f"{self.threads_first_third_median:g} ({self.threads_first_third_peak}) / "
                    f"{self.threads_last_third_median:g} ({self.threads_last_third_peak})"
                ),
            ),
            ("tenant pool threads peak (bound)", f"{self.pool_peak} ({self.pool_bound})"),
            ("threads after close", f"{self.threads_after_close}"),
        ]
        if self.server_rss_start is not None and self.server_rss_end is not None:
            server = f"{self.server_rss_start:.1f} -> {self.server_rss_end:.1f} {mib}"
            rows.append(("server RSS after warm-up -> end", server))
        rows.append(("verdict", "PASS" if self.passed else "FAIL"))
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


class _Samplers:
    """The current sampling client, and retired ones closed once no wave uses them."""

    def __init__(self, first: SamplingClient) -> None:
        self._lock = threading.Lock()
        self._current = first
        self._users: dict[int, int] = {id(first): 0}
        self._retired: list[SamplingClient] = []

    def acquire(self) -> SamplingClient:
        with self._lock:
            sampler = self._current
            self._users[id(sampler)] += 1
            return sampler

    def release(self, sampler: SamplingClient) -> None:
        with self._lock:
            self._users[id(sampler)] -= 1

    def swap(self, new: SamplingClient) -> None:
        with self._lock:
            self._retired.append(self._current)
            self._current = new
            self._users[id(new)] = 0
            idle = [s for s in self._retired if self._users[id(s)] == 0]
            self._retired = [s for s in self._retired if self._users[id(s)] > 0]
            for sampler in idle:
                del self._users[id(sampler)]
        for sampler in idle:
            sampler.close()


class Soak:
    """One soak run (see the module docstring)."""

    def __init__(
        self,
        config: Config,
        *,
        seconds: float,
        warmup: float | None = None,
        sample_threads: int = 3,
        wave: int = 8,
        swap_every: float = 3.0,
        save_every: float = 10.0,
        churn_every: float = 5.0,
        max_rss_growth: float = 20.0,
        server_pid: int | None = None,
    ) -> None:
        self.config = config
        self.seconds = seconds
        self.warmup = min(10.0, seconds / 5) if warmup is None else warmup
        self.sample_threads = sample_threads
        self.wave = wave
        self.swap_every = swap_every
        self.save_every = save_every
        self.churn_every = churn_every
        self.server_pid = server_pid
        self.report = Report(
            seconds, self.warmup, max_rss_growth=max_rss_growth, pool_bound=config.http_pool_size
        )
        self._pool_prefix = pool_prefix(config)
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ bookkeeping
    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self.report, name, getattr(self.report, name) + n)

    def _guard(self, fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            while not self._stop.is_set():
                try:
                    fn()
                except Exception as exc:
                    with self._lock:
                        self.report.errors.append(f"{type(exc).__name__}: {exc}"[:300])
                    self._stop.wait(0.5)  # keep loading, but do not spin on a broken server

        return run

    # ------------------------------------------------------------------ load
    def _train(self, service: ServiceClient, samplers: _Samplers) -> Callable[[], None]:
        training = service.create_lora_training_client(
            MODEL, types.LoraConfig(rank=4, seed=1), timeout=WAIT
        )
        batch = _batch()
        state = {"swap": time.monotonic(), "save": time.monotonic(), "n": 0}

        def step() -> None:
            output = training.forward_backward(batch, "cross_entropy")
            stepped = training.optim_step(ADAM)
            output.result(WAIT)
            stepped.result(WAIT)
            self._count("steps")
            now = time.monotonic()
            if now - state["swap"] >= self.swap_every:
                state["swap"], state["n"] = now, state["n"] + 1
                saved = training.save_weights_for_sampler(f"soak-{state['n']}").result(WAIT)
                assert saved.path is not None
                sampler = service.create_sampling_client(model_path=saved.path, timeout=WAIT)
                samplers.swap(sampler)
                self._count("sampler_swaps")
            if now - state["save"] >= self.save_every:
                state["save"] = now
                training.save_state(f"soak-state-{state['n']}").result(WAIT)
                self._count("state_saves")

        return step

    def _sample(self, samplers: _Samplers) -> Callable[[], None]:
        def wave() -> None:
            sampler = samplers.acquire()
            try:
                futures = [sampler.sample(PROMPT, PARAMS) for _ in range(self.wave)]
                for future in futures:
                    future.result(WAIT)
            finally:
                samplers.release(sampler)
            self._count("samples", self.wave)

        return wave

    def _churn(self) -> None:
        if self._stop.wait(self.churn_every):
            return
        with ServiceClient(self.config) as other:
            sampler = other.create_sampling_client(base_model=MODEL, timeout=WAIT)
            for future in [sampler.sample(PROMPT, PARAMS) for _ in range(4)]:
                future.result(WAIT)
            self._count("samples", 4)
        self._count("sessions_churned")

    # ------------------------------------------------------------------ run
    def run(self, progress: Callable[[str], None] | None = None) -> Report:
        """Run the load for ``seconds`` and return the report."""
        report = self.report
        report.threads_before = threading.active_count()
        threads: list[threading.Thread] = []
        with ServiceClient(self.config) as service:
            first = service.create_sampling_client(base_model=MODEL, timeout=WAIT)
            samplers = _Samplers(first)
            jobs = [self._train(service, samplers)] + [
                self._sample(samplers) for _ in range(self.sample_threads)
            ]
            jobs.append(self._churn)
            for index, job in enumerate(jobs):
                thread = threading.Thread(target=self._guard(job), name=f"soak-{index}")
                thread.start()
                threads.append(thread)
            self._measure(progress)
            self._stop.set()
            for thread in threads:
                thread.join(WAIT)
            if any(thread.is_alive() for thread in threads):
                report.errors.append("a load thread did not stop within the wait bound (hang)")
        deadline = time.monotonic() + 15.0
        while threading.active_count() > report.threads_before and time.monotonic() < deadline:
            time.sleep(0.1)
        report.threads_after_close = threading.active_count()
        return report

    def _measure(self, progress: Callable[[str], None] | None) -> None:
        report = self.report
        started = time.monotonic()
        self._stop.wait(self.warmup)
        gc.collect()
        report.rss_start = rss_mb()
        report.maxrss_warmup = peak_rss_mb()
        report.threads_start = threading.active_count()
        if self.server_pid is not None:
            report.server_rss_start = process_rss_mb(self.server_pid)
        end = started + self.seconds
        next_tick = time.monotonic() + 1.0
        while time.monotonic() < end:
            self._stop.wait(max(0.0, min(next_tick, end) - time.monotonic()))
            next_tick += 1.0
            report.rss_samples.append(round(rss_mb(), 2))
            threads = threading.enumerate()
            workers = sum(thread.name.startswith(self._pool_prefix) for thread in threads)
            report.thread_samples.append(len(threads))
            report.other_thread_samples.append(len(threads) - workers)
            report.pool_peak = max(report.pool_peak, workers)
            if progress is not None and len(report.rss_samples) % 30 == 0:
                progress(
                    f"  {time.monotonic() - started:5.0f} s  rss {report.rss_samples[-1]:.1f} MiB"
                    f"  threads {report.thread_samples[-1]}  steps {report.steps}"
                    f"  samples {report.samples}  errors {len(report.errors)}"
                )
        gc.collect()
        report.rss_end = rss_mb()
        report.maxrss_end = peak_rss_mb()
        report.rss_growth = report.rss_end - report.rss_start
        report.rss_peak = max([report.rss_end, *report.rss_samples])
        report.threads_end = threading.active_count()
        if self.server_pid is not None:
            report.server_rss_end = process_rss_mb(self.server_pid)
        samples = report.thread_samples or [report.threads_end]
        third = max(1, len(samples) // 3)
        report.threads_first_third_peak = max(samples[:third])
        report.threads_last_third_peak = max(samples[-third:])
        report.threads_first_third_median = statistics.median(samples[:third])
        report.threads_last_third_median = statistics.median(samples[-third:])


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="bench/soak.py", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="run length (600)")
    parser.add_argument("--warmup", type=float, help="seconds not measured (min(10, 1/5))")
    parser.add_argument("--base-url", help="an existing server (key from TINKER_API_KEY)")
    parser.add_argument("--sample-threads", type=int, default=3)
    parser.add_argument("--wave", type=int, default=8, help="concurrent samples per thread")
    parser.add_argument("--max-rss-growth-mb", type=float, default=20.0)
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)
    options: dict[str, Any] = {
        "warmup": args.warmup,
        "sample_threads": args.sample_threads,
        "wave": args.wave,
        "max_rss_growth": args.max_rss_growth_mb,
    }

    def progress(line: str) -> None:
        print(line, flush=True)

    print(f"soak: {args.seconds:.0f} s of mixed training and sampling", flush=True)
    if args.base_url:
        config = Config.new(base_url=args.base_url)
        report = Soak(config, seconds=args.seconds, **options).run(progress)
    else:
        with EmbeddedServer("null") as server:
            process = server.process
            pid = process.pid if process is not None else None
            soak = Soak(server.config(), seconds=args.seconds, server_pid=pid, **options)
            report = soak.run(progress)
    print(report.table())
    if report.errors:
        print("errors (first 10):")
        for error in report.errors[:10]:
            print(f"  {error}")
    if report.rss_samples:
        median = statistics.median(report.rss_samples)
        print(f"client RSS over the run: median {median:.1f} MiB")
    if args.json is not None:
        args.json.write_text(json.dumps(report.to_json(), indent=2))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
