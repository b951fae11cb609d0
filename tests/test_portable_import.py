"""The SDK imports on platforms without POSIX-only calls (Windows has no fork and no poll)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

_PROBE = textwrap.dedent(
    """
    import os, select
    # As on Windows: no fork at all (the standard library checks for os.fork first).
    del os.fork
    del os.register_at_fork
    del select.poll
    import tinkex_actors
    from tinkex_actors import Config, ServiceClient, RestClient, types
    from tinkex_actors.transport import HTTPTransport
    config = Config(api_key="tml-portable-import-test-0000", base_url="http://127.0.0.1:9")
    HTTPTransport(config).close()  # building a backend needs no POSIX-only call either
    print("imported", tinkex_actors.__version__)
    """
)


def test_import_without_register_at_fork_and_poll() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("imported ")
