"""HTTP transport cost per exchange: tinkex_actors vs bare clients, against one local server.

A tiny keep-alive HTTP/1.1 server runs in a **subprocess** (:mod:`bench._echo_server`), so
``time.process_time()`` in this process counts only client CPU. Every client sends the same
POST (a 200-byte JSON body, the headers a Tinker call carries) and reads a small JSON answer,
sequentially on one connection. Each repetition runs every client once, in a rotated order
(to spread machine drift evenly); the table shows median / min / max per exchange of client
CPU and wall time, and the CPU ratio to the bare ``http.client`` floor and to urllib3's pool.

Clients:

* ``http.client``: one ``HTTPConnection``, the floor.
* ``urllib3 pool``: ``HTTPConnectionPool.urlopen`` (the engine under requests).
* ``requests adapter.send``: a hand-prepared request through a mounted ``HTTPAdapter``.
* ``requests Session.post``: a default ``requests.Session`` (the usual way to use requests).
* ``requests Session trust_env=False``: the same without per-call environment lookups.
* ``httpx Client.post``: the official SDK's HTTP library, synchronous (when installed).
* ``ours``: ``HTTPTransport.request`` (a ``requests.Session`` sending prepared requests),
  with retries, telemetry and validation.
* ``ours + telemetry handler``: the same with a handler attached to the HTTP events.

``--threads N`` adds a throughput run: N threads sharing one transport vs one
``requests.Session`` per thread.

In ``python -m bench`` this is row 0: ours against the bare ``requests.Session`` floor
(http.client and httpx shown beside it). Alone:
``.venv/bin/python -m bench.transport [--exchanges 2000] [--reps 5] [--threads 8] [--json
PATH]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import requests
import requests.adapters
import urllib3

from tinkex_actors import telemetry
from tinkex_actors.config import Config
from tinkex_actors.transport import HTTPTransport

PATH = "/api/v1/forward_backward"
BODY = json.dumps({"model_id": "m" * 20, "seq_id": 1, "data": list(range(40))}).encode()[:200]
API_KEY = "tml-bench-0123456789abcdef"
HEADERS = {
    "X-API-Key": API_KEY,
    "Content-Type": "application/json",
    "Accept": "application/json",
    "User-Agent": "bench/1",
    "x-stainless-retry-count": "0",
    "x-stainless-read-timeout": "60",
    "X-Idempotency-Key": "tinkex-retry-0123456789abcdef0123456789abcdef",
}


# ------------------------------------------------------------------------------ clients
Client = Callable[[], None]


def clients(port: int) -> tuple[dict[str, Client], list[Callable[[], None]]]:
    base = f"http://127.0.0.1:{port}"
    url = base + PATH
    closers: list[Callable[[], None]] = []
    made: dict[str, Client] = {}

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    closers.append(conn.close)

    def bare() -> None:
        conn.request("POST", PATH, BODY, HEADERS)
        response = conn.getresponse()
        response.read()

    made["http.client"] = bare

    pool = urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=4, retries=False)
    closers.append(pool.close)
    timeout = urllib3.Timeout(connect=5, read=60)

    def u3() -> None:
        pool.urlopen("POST", PATH, body=BODY, headers=HEADERS, redirect=False, timeout=timeout)

    made["urllib3 pool"] = u3

    adapter = requests.adapters.HTTPAdapter(pool_maxsize=4)
    closers.append(adapter.close)

    def adapter_send() -> None:
        prepared = requests.PreparedRequest()
        prepared.prepare(method="POST", url=url, headers=HEADERS, data=BODY)
        adapter.send(prepared, timeout=(5, 60)).content  # noqa: B018

    made["requests adapter.send"] = adapter_send

    session = requests.Session()
    closers.append(session.close)
    made["requests Session.post"] = lambda: session.post(url, data=BODY, headers=HEADERS).content

    quiet = requests.Session()
    quiet.trust_env = False
    closers.append(quiet.close)
    made["requests Session trust_env=False"] = lambda: (
        quiet.post(url, data=BODY, headers=HEADERS).content
    )

    try:
        import httpx
    except ImportError:
        pass
    else:
        hx = httpx.Client()
        closers.append(hx.close)
        made["httpx Client.post"] = lambda: hx.post(url, content=BODY, headers=HEADERS).content

    config = Config(api_key=API_KEY, base_url=base)
    ours = HTTPTransport(config)
    closers.append(ours.close)

    def ours_default() -> None:
        ours.request("POST", PATH, body=BODY)

    made["ours"] = ours_default

    observed = HTTPTransport(config)
    closers.append(observed.close)

    def with_handler() -> None:
        observed.request("POST", PATH, body=BODY)

    made["ours + telemetry handler"] = with_handler
    return made, closers


def measure(client: Client, exchanges: int) -> tuple[float, float]:
    """Seconds of client CPU and wall time per exchange."""
    for _ in range(min(200, exchanges)):
        client()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(exchanges):
        client()
    return (
        (time.process_time() - cpu0) / exchanges,
        (time.perf_counter() - wall0) / exchanges,
    )


def throughput(port: int, threads: int, per_thread: int) -> dict[str, float]:
    """Exchanges per second with N threads: one shared transport vs a Session per thread."""
    base = f"http://127.0.0.1:{port}"
    results: dict[str, float] = {}
    transport = HTTPTransport(Config(api_key=API_KEY, base_url=base))

    def shared() -> None:
        for _ in range(per_thread):
            transport.request("POST", PATH, body=BODY)

    def own_session() -> None:
        with requests.Session() as session:
            session.trust_env = False
            for _ in range(per_thread):
                session.post(base + PATH, data=BODY, headers=HEADERS).content  # noqa: B018

    for name, work in (
        ("ours, one shared transport", shared),
        ("requests, Session per thread", own_session),
    ):
        pool = [threading.Thread(target=work) for _ in range(threads)]
        start = time.perf_counter()
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        results[name] = threads * per_thread / (time.perf_counter() - start)
    transport.close()
    return results


def start_server() -> tuple[subprocess.Popen[str], int]:
    """The tiny keep-alive server in a subprocess, and its port."""
    server = subprocess.Popen(
        [sys.executable, "-m", "bench._echo_server"], stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    return server, int(server.stdout.readline())


def measure_all(
    made: dict[str, Client], exchanges: int, reps: int
) -> dict[str, list[tuple[float, float]]]:
    """``(CPU s, wall s)`` per exchange for each client and rep (rotated order)."""
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in made}
    names = list(made)
    for rep in range(reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            # Only the "+ telemetry handler" client pays for a handler: attach per run.
            if name == "ours + telemetry handler":
                telemetry.attach(
                    "bench-handler",
                    [telemetry.HTTP_REQUEST_START, telemetry.HTTP_REQUEST_STOP],
                    lambda event, measurements, metadata, config: None,
                )
            try:
                samples[name].append(measure(made[name], exchanges))
            finally:
                telemetry.detach("bench-handler")
    return samples


#: The clients of the harness's row 0.
HARNESS_CLIENTS = ("http.client", "requests Session.post", "httpx Client.post", "ours")


def run(settings: Any, progress: Any) -> list[Any]:
    """Row 0: client CPU per HTTP exchange, ours vs a bare requests.Session (no target)."""
    from bench._common import Row, Stat

    progress(f"HTTP exchange cost ({settings.exchanges} exchanges x {settings.reps})")
    server, port = start_server()
    made, closers = clients(port)
    try:
        chosen = {name: made[name] for name in HARNESS_CLIENTS if name in made}
        samples = measure_all(chosen, settings.exchanges, settings.reps)
    finally:
        for close in closers:
            close()
        server.kill()
        server.wait(timeout=10)

    def cpu_us(name: str) -> Stat:
        return Stat.of(s[0] * 1e6 for s in samples[name])

    labels = []
    extra = {}
    for name, short in (("http.client", "http.client"), ("httpx Client.post", "httpx")):
        if name in samples:
            extra[short] = cpu_us(name)
            labels.append(f"{short} {extra[short].median:.0f}")
    return [
        Row(
            "0 one HTTP exchange: client CPU",
            "us",
            cpu_us("ours"),
            None,
            cpu_us("requests Session.post"),
            floor_label=f"requests ({', '.join(labels)})",
            extra=extra,
            digits=0,
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--exchanges", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()

    server, port = start_server()
    made, closers = clients(port)
    names = list(made)
    try:
        samples = measure_all(made, args.exchanges, args.reps)
        rates = throughput(port, args.threads, args.exchanges // 4) if args.threads else {}
    finally:
        for close in closers:
            close()
        server.kill()
        server.wait(timeout=10)

    def med(name: str, i: int) -> float:
        return statistics.median(s[i] for s in samples[name])

    floor, pool = med("http.client", 0), med("urllib3 pool", 0)
    print(
        f"\nper exchange, {args.exchanges} exchanges x {args.reps} reps; "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"urllib3 {urllib3.__version__}, requests {requests.__version__}"
    )
    header = (
        f"{'client':34s} {'cpu ms (med/min/max)':>24s} {'wall ms (med)':>14s}"
        f" {'cpu/http.client':>16s} {'cpu/urllib3':>12s}"
    )
    print(header)
    print("-" * len(header))
    table: dict[str, dict[str, float]] = {}
    for name in names:
        cpu = [s[0] * 1e3 for s in samples[name]]
        wall = med(name, 1) * 1e3
        row = {
            "cpu_ms_median": statistics.median(cpu),
            "cpu_ms_min": min(cpu),
            "cpu_ms_max": max(cpu),
            "wall_ms_median": wall,
            "cpu_ratio_http_client": med(name, 0) / floor,
            "cpu_ratio_urllib3": med(name, 0) / pool,
        }
        table[name] = row
        print(
            f"{name:34s} {row['cpu_ms_median']:8.3f} {row['cpu_ms_min']:7.3f}"
            f" {row['cpu_ms_max']:7.3f} {wall:14.3f}"
            f" {row['cpu_ratio_http_client']:16.2f} {row['cpu_ratio_urllib3']:12.2f}"
        )
    for name, rate in rates.items():
        print(f"{args.threads} threads: {name:34s} {rate:10.0f} exchanges/s")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(
                {"exchanges": args.exchanges, "reps": args.reps, "clients": table,
                 "threads": args.threads, "throughput": rates},
                out,
                indent=2,
            )  # fmt: skip


if __name__ == "__main__":
    main()
