"""Fixtures of the reliability tests: fault proxies, compressed fault timing, a TLS certificate.

* ``make_proxy(port, policy=None, tls=None)`` starts a :class:`FaultProxy` in front of a
  server port; every proxy is stopped (its thread joined) after the test.
* ``fast_sleep`` is the back-off sleep the SDK gets in fault scenarios: it caps each delay at
  20 ms, so a scenario with hundreds of retries runs in seconds. It changes the *timing* of
  the faults' consequences only, never which requests are retried or how often.
* ``certificate`` is a self-signed certificate for 127.0.0.1 (``openssl``), for TLS tests.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tinkex_actors import telemetry

from ._faults import Policy
from ._proxy import FaultProxy

#: Longest back-off sleep the SDK gets in fault scenarios (see ``fast_sleep``).
MAX_SLEEP = 0.02

MakeProxy = Callable[..., FaultProxy]


def capped_sleep(seconds: float) -> None:
    """``time.sleep`` capped at :data:`MAX_SLEEP`."""
    time.sleep(min(seconds, MAX_SLEEP))


@pytest.fixture
def fast_sleep() -> Callable[[float], None]:
    """The SDK's back-off sleep in fault scenarios (capped at 20 ms)."""
    return capped_sleep


@pytest.fixture
def make_proxy() -> Iterator[MakeProxy]:
    """Start fault proxies in front of server ports; all are stopped after the test."""
    started: list[FaultProxy] = []

    def make(
        port: int, policy: Policy | None = None, *, tls: ssl.SSLContext | None = None
    ) -> FaultProxy:
        proxy = FaultProxy(port, policy, tls=tls).start()
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        proxy.stop()


@pytest.fixture
def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    """A server-side TLS context presenting :func:`certificate`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*map(str, certificate))
    return context


@dataclass
class Heartbeats:
    """Heartbeat outcomes of one tenant, from telemetry (times from ``time.monotonic``)."""

    ok: int = 0
    failed: int = 0
    ok_after_failure: int = 0
    last_ok: float = 0.0


@pytest.fixture
def heartbeats() -> Iterator[Callable[[str], Heartbeats]]:
    """Heartbeat outcomes by tenant id, recorded from telemetry during the test."""
    seen: dict[str, Heartbeats] = defaultdict(Heartbeats)
    lock = threading.Lock()

    def on_event(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
        if not str(metadata.get("path", "")).endswith("/session_heartbeat"):
            return
        with lock:
            beats = seen[metadata["tenant_id"]]
            if event == telemetry.HTTP_REQUEST_STOP:
                beats.ok += 1
                beats.last_ok = time.monotonic()
                if beats.failed:
                    beats.ok_after_failure += 1
            else:
                beats.failed += 1

    telemetry.attach(
        "reliability-heartbeats",
        [telemetry.HTTP_REQUEST_STOP, telemetry.HTTP_REQUEST_EXCEPTION],
        on_event,
    )
    yield lambda tenant_id: seen[tenant_id]
    telemetry.detach("reliability-heartbeats")
