"""Shared fixtures.

* ``_no_thread_leaks`` (autouse): every test must leave no threads behind. Threads that are
  still alive a few seconds after the test are reported as a failure. Process-wide threads of
  third-party libraries that cannot be stopped (the official SDK's event loop) are allowed by
  name in ``ALLOWED_THREAD_PREFIXES``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest

# The official `tinker` SDK runs one process-wide asyncio loop thread it never stops; allow it
# by name. Nothing of ours belongs here.
ALLOWED_THREAD_PREFIXES: tuple[str, ...] = ("asyncio_", "tinker", "ThreadPoolExecutor-0_")

#: How long a test's threads get to finish after the test before they count as leaked.
THREAD_GRACE_SECONDS = 5.0

# Keep the suite quiet and offline: no telemetry upload, no hub lookups.
os.environ.setdefault("TINKER_TELEMETRY", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _leaked(before: set[int]) -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t.ident not in before and t.is_alive() and not t.name.startswith(ALLOWED_THREAD_PREFIXES)
    ]


@pytest.fixture(autouse=True)
def _no_thread_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    before = {t.ident for t in threading.enumerate() if t.ident is not None}
    yield
    deadline = time.monotonic() + THREAD_GRACE_SECONDS
    leaked = _leaked(before)
    while leaked and time.monotonic() < deadline:
        time.sleep(0.05)
        leaked = _leaked(before)
    if leaked:
        names = ", ".join(sorted(f"{t.name}(daemon={t.daemon})" for t in leaked))
        pytest.fail(f"{request.node.nodeid} leaked threads: {names}", pytrace=False)
