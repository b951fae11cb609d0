"""A benchmark worker: one client (driver) in its own process, driven over a pipe.

Run by :class:`bench._workers.Worker` as ``python -m bench._worker DRIVER BASE_URL API_KEY
SPEC_JSON [CPUS]``. It reads one JSON command per line on stdin and answers one JSON line on
the original stdout (anything the client libraries print goes to stderr). Timings are taken
here, in the client's own process: ``wall_s`` with ``time.perf_counter`` and ``cpu_s`` with
``time.process_time`` (every thread of the process: the official SDK's loop thread and our
actor and worker threads count as client CPU).

Commands: ``{"op": "setup"}``; ``{"op": "run", "call": "fb"|"optim"|"sample"|"step",
"n": N}``; ``{"op": "fanout", "n": N}``; ``{"op": "mixed", "n": N}``; ``{"op": "probe"}``
(RSS and thread count); ``{"op": "close"}``. The latency workload's: ``{"op": "burst",
"n": N}`` (submit N samples from this thread, then wait for them); ``{"op": "loaded_step",
"n": N, "settle": S}`` (submit N samples, S seconds later one training step, timed alone,
then wait for the samples); ``{"op": "floor_burst", "n": N}`` (the bare client's burst);
``{"op": "idle_wait", "baseline": T, "limit": S}`` (seconds until at most T threads again).
"""

from __future__ import annotations

import faulthandler
import gc
import json
import logging
import os
import sys
import threading
import time
import traceback
from typing import Any

from bench._common import rss_and_threads
from bench._drivers import LOAD_TIMEOUT, Official, Ours, Spec
from bench._floors import EngineFloor, HttpClientFloor, RequestsFloor

#: The drivers a worker can run, by name.
DRIVERS: dict[str, type[Any]] = {
    "ours": Ours,
    "official": Official,
    "http.client": HttpClientFloor,
    "requests": RequestsFloor,
    "engine": EngineFloor,
}
#: A thread count this close to the baseline counts as back to idle (the watcher, stragglers).
IDLE_MARGIN = 2


def _timed(fn: Any, *args: Any) -> dict[str, Any]:
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    value = fn(*args)
    return {
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu,
        "value": value,
    }


def _peak_threads(fn: Any, *args: Any) -> dict[str, Any]:
    # Sample the OS thread count while ``fn`` runs.
    gc.collect()
    rss_start, threads_start = rss_and_threads()
    peak = [threads_start]
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], rss_and_threads()[1])

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = _timed(fn, *args)
    finally:
        stop.set()
        watcher.join()
    # The watcher itself is not the client's.
    result["peak_threads"] = peak[0] - 1
    result["rss_mb_start"], result["threads_start"] = rss_start, threads_start
    # The footprint right at the end (another worker may still be busy, and idle threads
    # retire after a while).
    gc.collect()
    result["rss_mb_end"], result["threads_end"] = rss_and_threads()
    return result


def _burst(driver: Any, n: int) -> int:
    # ``n`` samples submitted at once from this thread, then awaited.
    return int(driver.await_samples(driver.submit_samples(n)))


def _loaded_step(driver: Any, n: int, settle: float) -> dict[str, Any]:
    # A training step issued while ``n`` samples are in flight; only the step is timed.
    futures = driver.submit_samples(n)
    time.sleep(settle)
    started = time.perf_counter()
    driver.step(LOAD_TIMEOUT)
    step_s = time.perf_counter() - started
    done = driver.await_samples(futures)
    return {"step_s": step_s, "value": done}


def _idle_wait(baseline: int, limit: float) -> dict[str, Any]:
    # Seconds until the process is back to ``baseline`` threads (``limit`` if it never is).
    started = time.monotonic()
    while True:
        elapsed = time.monotonic() - started
        threads = rss_and_threads()[1]
        if threads <= baseline + IDLE_MARGIN or elapsed >= limit:
            return {"value": min(elapsed, limit), "threads": threads}
        time.sleep(0.25)


def main() -> None:
    name, base_url, api_key, spec_json = sys.argv[1:5]
    if len(sys.argv) > 5 and sys.argv[5]:
        os.sched_setaffinity(0, {int(c) for c in sys.argv[5].split(",")})
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    # Retries, restarts and give-ups of either SDK land in the worker's log (stderr), which
    # the coordinator shows when a command fails.
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s",
    )
    spec = Spec(**json.loads(spec_json))
    driver = DRIVERS[name]()
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        try:
            if op == "setup":
                reply = _timed(driver.setup, base_url, api_key, spec)
            elif op == "run":
                call = getattr(driver, command["call"])
                n = int(command["n"])

                def loop(call: Any = call, n: int = n) -> int:
                    for _ in range(n):
                        call()
                    return n

                reply = _timed(loop)
            elif op == "fanout":
                reply = _peak_threads(driver.fanout, int(command["n"]))
            elif op == "mixed":
                reply = _peak_threads(driver.mixed, int(command["n"]))
            elif op == "burst":
                reply = _peak_threads(_burst, driver, int(command["n"]))
            elif op == "loaded_step":
                reply = _loaded_step(driver, int(command["n"]), float(command["settle"]))
            elif op == "floor_burst":
                reply = driver.burst(int(command["n"]))
            elif op == "idle_wait":
                reply = _idle_wait(int(command["baseline"]), float(command["limit"]))
            elif op == "probe":
                gc.collect()
                rss, threads = rss_and_threads()
                reply = {"rss_mb": rss, "threads": threads}
            elif op == "close":
                reply = _timed(driver.close)
            else:
                reply = {"error": f"unknown op {op!r}"}
        except BaseException:
            # Where every thread was when the command failed (a wedge shows here).
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
            reply = {"error": traceback.format_exc()}
        out.write(json.dumps(reply) + "\n")
        if op == "close":
            break


if __name__ == "__main__":
    main()
