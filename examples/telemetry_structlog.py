"""Telemetry to structlog: JSON log lines for every request, plus your own metrics handler.

The library never configures logging: it logs through structlog over the stdlib logger
``tinkex_actors``, silent until the application says otherwise. This example (the
application) configures structlog to render JSON, sends the root logger (and with it the
library's ``tinkex_actors`` records) to stdout, and calls ``telemetry.attach_logger()`` so
every telemetry event becomes a log line. A second handler, attached with
``telemetry.attach``, aggregates request latencies per endpoint, the way you would feed
Prometheus or StatsD.

    python examples/telemetry_structlog.py

Starts the embedded server (null engine); set ``TINKER_BASE_URL`` / ``TINKER_API_KEY`` (and
``EXAMPLE_BASE_MODEL``) to use another Tinker server.
"""

from __future__ import annotations

import collections
import logging
import os
import statistics
import sys
import threading
from typing import Any

import structlog

from tinkex_actors import ServiceClient, telemetry, types
from tinkex_actors.server.embedded import config_or_embedded

BASE_MODEL = os.environ.get("EXAMPLE_BASE_MODEL", "tinkex/tiny-llama")


def configure_logging() -> None:
    """structlog renders JSON; the library's stdlib records go through the same renderer."""
    structlog.configure(
        processors=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(processor=structlog.processors.JSONRenderer())
    )
    root = logging.getLogger()  # the library's records (and this example's) propagate here
    root.addHandler(handler)
    root.setLevel(logging.INFO)


class Latencies:
    """A telemetry handler: request durations per (method, path)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # handlers run in whichever thread emits the event
        self.seconds: dict[str, list[float]] = collections.defaultdict(list)

    def __call__(self, event: Any, measurements: Any, metadata: Any, config: Any) -> None:
        with self.lock:
            key = f"{metadata['method']} {metadata['path']}"
            self.seconds[key].append(measurements["duration"] / 1e9)


def main() -> None:
    configure_logging()
    log = structlog.get_logger("example")
    # Every event as a JSON line on tinkex_actors.telemetry (stream=None: through the app's
    # logging configuration instead of the quick stderr console).
    telemetry.attach_logger(logging.INFO, stream=None)
    latencies = Latencies()
    telemetry.attach("example-latencies", telemetry.HTTP_REQUEST_STOP, latencies)
    try:
        with config_or_embedded("null") as config, ServiceClient(config) as service:
            log.info("example.session_started", session_id=service.session_id)
            training = service.create_lora_training_client(BASE_MODEL, {"rank": 8})
            datum = types.Datum(
                types.ModelInput.from_ints([1, 2, 3, 4]),
                {"target_tokens": [2, 3, 4, 5], "weights": [1.0] * 4},
            )
            for _ in range(3):
                training.forward_backward([datum], "cross_entropy")
                training.optim_step(types.AdamParams(learning_rate=1e-3)).result()
            sampler = training.save_weights_and_get_sampling_client()
            sampler.sample(types.ModelInput.from_ints([1, 2]), {"max_tokens": 4}).result()
            log.info("example.work_done")
    finally:
        telemetry.detach("example-latencies")
        telemetry.detach("tinkex_actors.logger")

    print("\nrequests per endpoint (from the telemetry handler):")
    for key, values in sorted(latencies.seconds.items()):
        print(f"  {key:45} n={len(values):3d}  median {statistics.median(values) * 1e3:7.2f} ms")


if __name__ == "__main__":
    main()
