"""Embedded server throughput: retrieve_future answers per second on the null engine.

Starts ``python -m tinkex_actors.server --engine null`` in a subprocess (its own temp data
dir), creates a finished JSON future (create_model) and a finished protobuf one (asample),
then polls them from client *processes* (so the client's GIL does not cap the server), each
with a few keep-alive ``http.client`` connections on threads, for a fixed time. Reports
answers per second for each kind, plus the median latency of one poll on an idle server.

Run: ``.venv/bin/python -m bench.server [--seconds 5] [--procs 2] [--conns 4]`` (not part of
``python -m bench``: it measures the server alone).
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

API_KEY = "tml-bench-key"
MODEL = "tinkex/tiny-llama"


def _call(
    conn: http.client.HTTPConnection,
    path: str,
    body: dict[str, Any],
    accept: str = "application/json",
) -> bytes:
    payload = json.dumps(body).encode()
    headers = {"X-API-Key": API_KEY, "Content-Type": "application/json", "Accept": accept}
    conn.request("POST", f"/api/v1{path}", body=payload, headers=headers)
    reply = conn.getresponse()
    data = reply.read()
    if reply.status != 200:
        raise RuntimeError(f"{path}: {reply.status} {data[:200]!r}")
    return data


def _wait_done(conn: http.client.HTTPConnection, request_id: str, accept: str) -> None:
    while True:
        data = _call(conn, "/retrieve_future", {"request_id": request_id}, accept)
        if not data.startswith(b"{") or b"try_again" not in data:
            return


def _hammer(port: int, request_id: str, accept: str, conns: int, seconds: float, out: Any) -> None:
    counts = [0] * conns
    stop = time.monotonic() + seconds

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port)
        body = json.dumps({"request_id": request_id, "allow_metadata_only": False}).encode()
        headers = {"X-API-Key": API_KEY, "Content-Type": "application/json", "Accept": accept}
        while time.monotonic() < stop:
            conn.request("POST", "/api/v1/retrieve_future", body=body, headers=headers)
            reply = conn.getresponse()
            reply.read()
            if reply.status != 200:
                raise RuntimeError(f"retrieve_future answered {reply.status}")
            counts[i] += 1
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(sum(counts))


def _throughput(
    port: int, request_id: str, accept: str, procs: int, conns: int, seconds: float
) -> float:
    queue: Any = multiprocessing.Queue()
    workers = [
        multiprocessing.Process(
            target=_hammer, args=(port, request_id, accept, conns, seconds, queue)
        )
        for _ in range(procs)
    ]
    started = time.monotonic()
    for w in workers:
        w.start()
    total = sum(queue.get(timeout=seconds + 60) for _ in workers)
    for w in workers:
        w.join(30)
    return total / (time.monotonic() - started)


def _start_server(root: Path) -> tuple[subprocess.Popen[bytes], int]:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--conns", type=int, default=4, help="connections per client process")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="tinkex-bench-server-"))
    process, port = _start_server(root)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port)
        session = json.loads(_call(conn, "/create_session", {"tags": [], "sdk_version": "bench"}))
        create = json.loads(
            _call(
                conn,
                "/create_model",
                {
                    "session_id": session["session_id"],
                    "model_seq_id": 0,
                    "base_model": MODEL,
                    "lora_config": {"rank": 8},
                },
            )
        )
        _wait_done(conn, create["request_id"], "application/json")
        sample = json.loads(
            _call(
                conn,
                "/asample",
                {
                    "base_model": MODEL,
                    "num_samples": 4,
                    "prompt": {"chunks": [{"type": "encoded_text", "tokens": list(range(1, 33))}]},
                    "sampling_params": {"max_tokens": 16, "seed": 1},
                },
            )
        )
        _wait_done(conn, sample["request_id"], "application/x-protobuf")
        latencies = []
        for _ in range(500):
            started = time.perf_counter()
            _call(conn, "/retrieve_future", {"request_id": create["request_id"]})
            latencies.append((time.perf_counter() - started) * 1e6)
        conn.close()
        json_rate = _throughput(
            port, create["request_id"], "application/json", args.procs, args.conns, args.seconds
        )
        proto_rate = _throughput(
            port,
            sample["request_id"],
            "application/x-protobuf",
            args.procs,
            args.conns,
            args.seconds,
        )
        cores, python = os.cpu_count(), platform.python_version()
        print(f"machine: {platform.machine()}, {cores} cores, Python {python}")
        print(
            f"clients: {args.procs} processes x {args.conns} keep-alive connections, "
            f"{args.seconds:.0f} s each"
        )
        median = statistics.median(latencies)
        print(f"retrieve_future, finished JSON future (create_model):   {json_rate:8.0f} answers/s")
        print(
            f"retrieve_future, finished protobuf future (asample x4): {proto_rate:8.0f} answers/s"
        )
        print(f"one poll on an idle server (median of 500):             {median:8.0f} us")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait(30)
        shutil.rmtree(root, ignore_errors=True)
        if code != 0:
            print(f"server exited with {code}", file=sys.stderr)


if __name__ == "__main__":
    main()
