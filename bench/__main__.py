"""``python -m bench``: every workload, ours vs the official SDK vs a floor, in one run.

Prints one table (workload, unit, ours, official, floor, ratios, target, met?) and writes
``bench/results/latest.json`` (figures with min / max and every repetition, the machine, the
command). ``--smoke`` runs every workload at a tiny size in seconds (the test suite's check
that the harness works; its figures mean nothing). See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from bench._common import Progress, Row, format_table, machine
from bench._servers import bench_server
from bench._settings import FULL, SMOKE, Settings
from bench._workers import close_all

WORKLOADS = (
    "transport",
    "sequential",
    "fanout",
    "encode",
    "pipelining",
    "footprint",
    "embedded",
    "latency",
)
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "latest.json"
DEFAULT_CHART = Path(__file__).resolve().parent.parent / "docs" / "performance.png"


def _cpus(text: str | None) -> tuple[int, ...] | None:
    return None if not text else tuple(int(c) for c in text.split(","))


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds (tests)")
    parser.add_argument(
        "--only", default=",".join(WORKLOADS), help=f"comma-separated subset of {WORKLOADS}"
    )
    parser.add_argument("--reps", type=int, help="repetitions of each timed block")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results file")
    parser.add_argument("--no-output", action="store_true", help="write no JSON file")
    parser.add_argument(
        "--chart",
        type=Path,
        default=DEFAULT_CHART,
        help="redraw this PNG after a full run (default docs/performance.png)",
    )
    parser.add_argument("--server-cpus", help="pin the servers to these CPUs, e.g. 0")
    parser.add_argument("--client-cpus", help="pin the client processes to these CPUs, e.g. 1")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    latency = parser.add_argument_group("the latency workload (7)")
    latency.add_argument("--load-samples", type=int, help="samples per burst (2000)")
    latency.add_argument(
        "--sample-latency-ms", type=float, help="the server's latency per sample (2000)"
    )
    latency.add_argument("--network-delay-ms", type=float, help="the emulated network hop (10)")
    latency.add_argument("--load-reps", type=int, help="repetitions of the latency workload (3)")
    return parser.parse_args(argv)


def _null_server_group(settings: Settings, only: set[str], progress: Progress) -> list[Row]:
    from bench import fanout, footprint, sequential

    rows: list[Row] = []
    with bench_server("null", cpus=settings.server_cpus) as server:
        if {"sequential", "fanout"} & only:
            progress("starting the clients")
            workers = sequential.start(settings, server)
            try:
                if "sequential" in only:
                    rows += sequential.run(settings, workers, progress)
                if "fanout" in only:
                    rows += fanout.run(settings, workers, progress)
            finally:
                close_all(workers)
        if "footprint" in only:
            rows += footprint.run(settings, server, progress)
    return rows


def run(settings: Settings, only: list[str], progress: Progress) -> list[Row]:
    """Run the chosen workloads (servers started and stopped here); their rows in order.

    Workloads run one after another, except in the smoke run (``settings.parallel``), whose
    figures mean nothing: there independent groups run at the same time to keep it short.
    """
    unknown = set(only) - set(WORKLOADS)
    if unknown:
        raise SystemExit(f"unknown workloads: {sorted(unknown)} (choose from {WORKLOADS})")
    chosen = set(only)
    # Workload modules are imported when run: `import tinker` alone takes seconds.
    groups: list[Callable[[], list[Row]]] = []
    if "transport" in chosen:

        def transport_group() -> list[Row]:
            from bench import transport

            return transport.run(settings, progress)

        groups.append(transport_group)
    if {"sequential", "fanout", "footprint"} & chosen:
        groups.append(lambda: _null_server_group(settings, chosen, progress))
    if "encode" in chosen:

        def encode_group() -> list[Row]:
            from bench import encode

            return encode.run(settings, progress)

        groups.append(encode_group)
    if "pipelining" in chosen:

        def pipelining_group() -> list[Row]:
            from bench import pipelining

            return pipelining.run(settings, progress)

        groups.append(pipelining_group)
    if "embedded" in chosen:

        def embedded_group() -> list[Row]:
            from bench import embedded

            return embedded.run(settings, progress)

        groups.append(embedded_group)
    if "latency" in chosen:

        def latency_group() -> list[Row]:
            from bench import latency

            return latency.run(settings, progress)

        groups.append(latency_group)
    if settings.parallel:
        with concurrent.futures.ThreadPoolExecutor(len(groups) or 1) as pool:
            results = [future.result() for future in [pool.submit(g) for g in groups]]
    else:
        results = [group() for group in groups]
    rows = [row for result in results for row in result]
    return sorted(rows, key=lambda row: row.workload.split(" ", 1)[0])


def main(argv: list[str] | None = None) -> int:
    """Run, print the table, write the JSON; exit status 0 (targets missed are reported)."""
    args = parse(argv)
    settings = SMOKE if args.smoke else FULL
    if args.reps is not None:
        settings = replace(settings, reps=args.reps)
    settings = replace(
        settings, server_cpus=_cpus(args.server_cpus), client_cpus=_cpus(args.client_cpus)
    )
    overrides = {
        "load_samples": args.load_samples,
        "sample_latency_ms": args.sample_latency_ms,
        "network_delay_ms": args.network_delay_ms,
        "load_reps": args.load_reps,
    }
    settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    only = [w.strip() for w in args.only.split(",") if w.strip()]
    started = time.monotonic()
    when = datetime.datetime.now(datetime.UTC)
    host = machine()

    def progress(text: str) -> None:
        if not args.quiet:
            print(f"[{time.monotonic() - started:6.1f} s] {text}", file=sys.stderr, flush=True)

    rows = run(settings, only, progress)
    elapsed = time.monotonic() - started
    command = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
    print(
        f"tinkex_actors benchmark, {when:%Y-%m-%d %H:%M} UTC, {host['cpu']} "
        f"({host['cores']} cores, {host['memory']}), Python {host['python']}, "
        f"tinker {host['versions']['tinker']}; {elapsed:.0f} s"
    )
    reps = f"{settings.reps} reps"
    if "latency" in only:
        reps += f" ({settings.load_reps} for workload 7)"
    print(f"command: {command.strip()}; medians of {reps} (min/max in the JSON)")
    print(format_table(rows))
    missed = [row.workload for row in rows if row.met() == "NO"]
    print(f"targets met: {sum(row.met() == 'yes' for row in rows)}/"
          f"{sum(row.met() != '-' for row in rows)}"
          + (f"; missed: {', '.join(missed)}" if missed else ""), flush=True)  # fmt: skip
    if not args.no_output:
        result: dict[str, Any] = {
            "date": when.isoformat(timespec="seconds"),
            "command": command.strip(),
            "elapsed_s": round(elapsed, 1),
            "machine": host,
            "load_average_end": os.getloadavg()[0],
            "settings": asdict(settings),
            "smoke": args.smoke,
            "rows": [row.to_json() for row in rows],
            "table": format_table(rows),
        }
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
        if not args.smoke and set(only) == set(WORKLOADS):
            from bench import chart, report

            chart.draw(result, args.chart)
            if args.output == DEFAULT_OUTPUT:
                report.update(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
