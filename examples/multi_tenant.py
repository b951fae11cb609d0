"""A multi-tenant worker pool: several ServiceClients in one process, one of them throttled.

Each tenant (an API key, or more generally a distinct ``Config``) gets its own connection
pool, worker threads and 429 back-off state, so a tenant that hits its rate limit waits
alone. Here three tenants fan out samples concurrently; the embedded server limits the
``noisy`` tenant to a few samples per second (``--rate-limit KEY=N``, answered with 429),
and the table shows the quiet tenants' throughput alone and next to the throttled one (what
they lose is the shared local server's CPU, not the noisy tenant's back-off).

    python examples/multi_tenant.py [--samples 200] [--rate 5]

Starts the embedded server (null engine: instant simulated sampling, so the numbers show the
client); with ``TINKER_BASE_URL`` / ``TINKER_API_KEY`` set it runs the same workload against
that server, the tenants then differing by their tags and no server-side limit applied.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import os
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from tinkex_actors import Config, SamplingClient, ServiceClient, telemetry, types
from tinkex_actors.server.embedded import EmbeddedServer, generate_api_key

BASE_MODEL = os.environ.get("EXAMPLE_BASE_MODEL", "tinkex/tiny-llama")
QUIET = ("quiet-a", "quiet-b")
NOISY = "noisy"
PROMPT = types.ModelInput.from_ints([1, 2, 3, 4])
PARAMS = types.SamplingParams(max_tokens=8, temperature=1.0)


@contextlib.contextmanager
def tenant_configs(rate: float) -> Iterator[dict[str, Config]]:
    """One Config per tenant: an embedded server with a key each, or the environment's."""
    names = (*QUIET, NOISY)
    if os.environ.get("TINKER_BASE_URL") and os.environ.get("TINKER_API_KEY"):
        base = Config.new()
        yield {name: base.with_(tags=(name,)) for name in names}
        return
    keys = {name: generate_api_key() for name in names}
    server = EmbeddedServer(
        "null",
        api_key=keys[QUIET[0]],
        extra_api_keys=[keys[name] for name in names[1:]],
        extra_args=("--rate-limit", f"{keys[NOISY]}={rate:g}"),
    )
    with server:
        yield {name: server.config(api_key=key) for name, key in keys.items()}


class Refusals:
    """Counts 429 answers per tenant, from telemetry (tenant ids are one-way key hashes)."""

    def __init__(self, configs: Mapping[str, Config]) -> None:
        self.names = {config.tenant_id: name for name, config in configs.items()}
        self.counts: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()

    def __call__(self, event: Any, measurements: Any, metadata: Any, config: Any) -> None:
        if metadata.get("status") == 429:
            with self.lock:
                self.counts[self.names.get(metadata["tenant_id"], "?")] += 1


def fan_out(sampler: SamplingClient, count: int) -> tuple[int, float]:
    """Send ``count`` samples at once; wait for all. Returns (completed, seconds)."""
    started = time.monotonic()
    futures = [sampler.sample(PROMPT, PARAMS) for _ in range(count)]
    completed = sum(len(f.result(timeout=120).sequences) for f in futures)
    return completed, time.monotonic() - started


def run_phase(
    samplers: Mapping[str, SamplingClient], counts: Mapping[str, int]
) -> dict[str, tuple[int, float]]:
    """Each tenant fans out from its own thread, all at the same time."""
    with concurrent.futures.ThreadPoolExecutor(len(counts)) as pool:
        running = {name: pool.submit(fan_out, samplers[name], n) for name, n in counts.items()}
        return {name: future.result() for name, future in running.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200, help="samples per quiet tenant")
    parser.add_argument("--noisy-samples", type=int, default=30)
    parser.add_argument("--rate", type=float, default=5.0, help="noisy tenant's samples/s")
    args = parser.parse_args()

    with tenant_configs(args.rate) as configs, contextlib.ExitStack() as stack:
        refusals = Refusals(configs)
        telemetry.attach("multi-tenant-429s", telemetry.HTTP_REQUEST_EXCEPTION, refusals)
        stack.callback(telemetry.detach, "multi-tenant-429s")
        samplers = {}
        for name, config in configs.items():
            service = stack.enter_context(ServiceClient(config))
            samplers[name] = service.create_sampling_client(base_model=BASE_MODEL)
        # Warm-up: connections, worker threads and server-side samplers all exist afterwards.
        run_phase(samplers, {**dict.fromkeys(QUIET, args.samples), NOISY: 1})

        alone = run_phase(samplers, dict.fromkeys(QUIET, args.samples))
        refusals.counts.clear()
        together = run_phase(
            samplers, {**dict.fromkeys(QUIET, args.samples), NOISY: args.noisy_samples}
        )

    print(f"{'tenant':8}  {'phase':9}  {'samples':>7}  {'seconds':>7}  {'samples/s':>9}  429s")
    for phase, results in (("alone", alone), ("together", together)):
        for name, (done, seconds) in results.items():
            refused = refusals.counts[name] if phase == "together" else 0
            print(
                f"{name:8}  {phase:9}  {done:7d}  {seconds:7.2f}  {done / seconds:9.1f}  {refused}"
            )
    kept = [together[n][0] / together[n][1] / (alone[n][0] / alone[n][1]) for n in QUIET]
    noisy_done, noisy_seconds = together[NOISY]
    print(
        f"quiet tenants kept {min(kept):.0%}-{max(kept):.0%} of their throughput while the "
        f"noisy tenant ran at {noisy_done / noisy_seconds:.1f} samples/s "
        f"({refusals.counts[NOISY]} answers 429)"
    )


if __name__ == "__main__":
    main()
