"""Actor runtime smoke benchmark: sequential training calls, sampling fan-out, pipelining.

Starts two null-engine servers in subprocesses (one plain, one with 50 ms of simulated work
per forward_backward and optim_step) and measures, through ``tinkex_actors``:

* sequential ``forward_backward(1 datum of 16 tokens).result()``, ``optim_step().result()``
  and ``sample(max_tokens=8).result()``: wall and client CPU (``time.process_time``, which
  counts every thread of this process) per call, next to a bare ``http.client`` loop doing
  the same submit + retrieve_future exchanges (the floor);
* fan-out: ``samples`` samples from 32 threads at once: samples per second, client CPU per
  sample, peak thread count;
* pipelining: 20 x (forward_backward; optim_step; wait both) on the 50 ms server, wall over
  the ideal 20 x 2 x 50 ms;
* footprint: threads and RSS before and after.

Numbers only, no targets: ``make bench`` compares against the official SDK.

Run: ``.venv/bin/python bench/bench_actors_smoke.py [--calls 200] [--samples 2000]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tinkex_actors import Config, ServiceClient, types
from tinkex_actors.types import ForwardBackwardInput, ForwardBackwardRequest
from tinkex_actors.wire import encode_forward_backward_request

API_KEY = "tml-bench-actors-key"
MODEL = "tinkex/tiny-llama"
TOKENS = list(range(1, 17))


def _start_server(root: Path, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    root.mkdir(parents=True, exist_ok=True)
    port_file = root / "port"
    log = (root / "server.log").open("wb")
    command = [
        sys.executable,
        "-m",
        "tinkex_actors.server",
        "--engine=null",
        "--port=0",
        f"--port-file={port_file}",
        f"--data-dir={root / 'data'}",
        f"--api-key={API_KEY}",
        *extra,
    ]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + 60
    while not (port_file.exists() and port_file.read_text()):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError((root / "server.log").read_text())
        time.sleep(0.05)
    port = int(port_file.read_text())
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/api/v1/healthz")
            conn.getresponse().read()
            conn.close()
            return process, port
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(30)


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _interleaved(
    ours: Callable[[], object], floor: Callable[[], object] | None, calls: int, rounds: int = 5
) -> tuple[tuple[float, float], tuple[float, float] | None]:
    """Median (wall ms, CPU ms) per call of ``ours`` and ``floor``, run in alternating blocks.

    Alternating blocks spread machine drift (other processes, frequency) over both.
    """
    block = max(1, calls // rounds)
    for _ in range(min(20, calls)):
        ours()
        if floor is not None:
            floor()
    results: dict[str, list[tuple[float, float]]] = {"ours": [], "floor": []}
    for _ in range(rounds):
        for name, fn in (("ours", ours), ("floor", floor)):
            if fn is None:
                continue
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(block):
                fn()
            results[name].append(
                (
                    (time.perf_counter() - wall) / block * 1000,
                    (time.process_time() - cpu) / block * 1000,
                )
            )

    def median(rows: list[tuple[float, float]]) -> tuple[float, float]:
        return statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)

    return median(results["ours"]), (median(results["floor"]) if floor is not None else None)


class _Floor:
    """Bare http.client submit + retrieve_future exchanges on one keep-alive connection."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port)
        self.headers = {"X-API-Key": API_KEY, "Content-Type": "application/json"}

    def exchange(self, path: str, body: bytes, content_type: str, proto: bool) -> None:
        headers = {**self.headers, "Content-Type": content_type}
        self.conn.request("POST", path, body, headers)
        answer = self.conn.getresponse().read()
        request_id = json.loads(answer)["request_id"]
        poll = json.dumps({"request_id": request_id, "allow_metadata_only": True})
        accept = "application/x-protobuf" if proto else "application/json"
        self.conn.request(
            "POST", "/api/v1/retrieve_future", poll, {**self.headers, "Accept": accept}
        )
        self.conn.getresponse().read()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="tinkex-bench-actors-"))
    fast, fast_port = _start_server(root / "fast", "--poll-hold-seconds=5")
    slow, slow_port = _start_server(root / "slow", "--simulate-ms=50", "--poll-hold-seconds=5")
    rows: list[tuple[str, str]] = []
    try:
        threads_before, rss_before = threading.active_count(), _rss_mb()
        config = Config(api_key=API_KEY, base_url=f"http://127.0.0.1:{fast_port}")
        with ServiceClient(config) as service:
            training = service.create_lora_training_client(MODEL, timeout=60)
            sampler = service.create_sampling_client(base_model=MODEL, timeout=60)
            datum = types.Datum(
                types.ModelInput.from_ints(TOKENS[:-1]),
                {"target_tokens": TOKENS[1:], "weights": [1.0] * 15},
            )
            prompt = types.ModelInput.from_ints([1, 2, 3, 4])
            params = types.SamplingParams(max_tokens=8)
            adam = types.AdamParams()

            floor = _Floor(fast_port)
            seq = [0]

            def floor_fb() -> None:
                # The floor continues the model's seq_ids between our blocks.
                state = training._state
                request = ForwardBackwardRequest(
                    forward_backward_input=ForwardBackwardInput(
                        data=[datum], loss_fn="cross_entropy"
                    ),
                    model_id=training.model_id,
                    seq_id=state.next_seq,
                )
                floor.exchange(
                    "/api/v1/forward_backward",
                    encode_forward_backward_request(request),
                    "application/x-protobuf",
                    True,
                )
                state.next_seq += 1

            sample_body = {
                "prompt": {"chunks": [{"type": "encoded_text", "tokens": [1, 2, 3, 4]}]},
                "sampling_params": {"max_tokens": 8},
                "num_samples": 1,
                "sampling_session_id": sampler.sampler_id,
                "type": "sample",
            }
            seq[0] = 10**8

            def floor_sample() -> None:
                seq[0] += 1
                body = json.dumps({**sample_body, "seq_id": seq[0]}).encode()
                floor.exchange("/api/v1/asample", body, "application/json", True)

            fb, floor_fb_cost = _interleaved(
                lambda: training.forward_backward([datum], "cross_entropy").result(60),
                floor_fb,
                args.calls,
            )
            opt, _ = _interleaved(lambda: training.optim_step(adam).result(60), None, args.calls)
            smp, floor_sample_cost = _interleaved(
                lambda: sampler.sample(prompt, params).result(60), floor_sample, args.calls
            )
            for name, ours, base in (
                ("forward_backward", fb, floor_fb_cost),
                ("optim_step", opt, None),
                ("sample", smp, floor_sample_cost),
            ):
                text = f"{ours[0]:7.3f} ms wall, {ours[1]:6.3f} ms CPU"
                if base is not None:
                    text += (
                        f"   (http.client floor {base[0]:6.3f} ms wall, {base[1]:6.3f} ms CPU;"
                        f" ratio {ours[0] / base[0]:4.2f}x wall)"
                    )
                rows.append((f"sequential {name}", text))

            # Fan-out from many threads.
            peak = [threading.active_count()]
            per_thread = max(1, args.samples // args.threads)

            def fan(_: int) -> int:
                futures = [sampler.sample(prompt, params) for _ in range(per_thread)]
                peak[0] = max(peak[0], threading.active_count())
                return sum(len(f.result(120).sequences) for f in futures)

            cpu, wall = time.process_time(), time.perf_counter()
            with ThreadPoolExecutor(args.threads) as pool:
                done = sum(pool.map(fan, range(args.threads)))
            elapsed = time.perf_counter() - wall
            rows.append(
                (
                    f"fan-out {done} samples / {args.threads} threads",
                    (
                        f"{done / elapsed:7.0f} samples/s, "
                        f"{(time.process_time() - cpu) / done * 1000:6.3f} ms CPU/sample, "
                        f"peak {peak[0]} threads (pool bound {config.http_pool_size})"
                    ),
                )
            )

        slow_config = Config(api_key=API_KEY, base_url=f"http://127.0.0.1:{slow_port}")
        with ServiceClient(slow_config) as service:
            training = service.create_lora_training_client(MODEL, timeout=60)
            training.forward_backward([datum], "cross_entropy").result(60)
            training.optim_step(adam).result(60)
            started = time.perf_counter()
            for _ in range(args.steps):
                step_fb = training.forward_backward([datum], "cross_entropy")
                step_opt = training.optim_step(adam)
                step_fb.result(60)
                step_opt.result(60)
            elapsed = time.perf_counter() - started
            ideal = args.steps * 2 * 0.050
            rows.append(
                (
                    f"pipelining {args.steps} steps @ 50 ms",
                    f"{elapsed:6.3f} s wall, ideal {ideal:5.3f} s: {elapsed / ideal:4.3f}x",
                )
            )
        time.sleep(0.2)
        rows.append(
            (
                "footprint after close",
                (
                    f"threads {threads_before} -> {threading.active_count()}, "
                    f"RSS {rss_before:6.1f} -> {_rss_mb():6.1f} MB"
                ),
            )
        )
    finally:
        _stop(fast)
        _stop(slow)
        shutil.rmtree(root, ignore_errors=True)
    print(f"tinkex_actors smoke benchmark ({platform.python_version()}, {platform.machine()})")
    width = max(len(name) for name, _ in rows)
    for name, text in rows:
        print(f"  {name:<{width}}  {text}")


if __name__ == "__main__":
    main()
