"""Shared fixtures.

* ``_no_thread_leaks`` (autouse): every test must leave no threads behind. Threads that are
  still alive a few seconds after the test are reported as a failure. Process-wide threads of
  third-party libraries that cannot be stopped (the official SDK's event loop) are allowed by
  name in ``ALLOWED_THREAD_PREFIXES``.
* The secret scan (``tests/reliability/_secret_scan.py``): over the whole session, every log
  record, telemetry event, test's captured output and embedded server log is searched for
  anything shaped like an API key; a key found anywhere fails the run at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _servers import ServerHandle, session_server
from reliability._secret_scan import SecretScan

# The official `tinker` SDK runs one process-wide asyncio loop thread it never stops; allow it
# by name. Nothing of ours belongs here.
ALLOWED_THREAD_PREFIXES: tuple[str, ...] = ("asyncio_", "tinker", "ThreadPoolExecutor-0_")
#: The official SDK's loop thread is named ``Thread-N (_background_thread_func)``.
ALLOWED_THREAD_SUFFIXES: tuple[str, ...] = ("(_background_thread_func)",)

#: How long a test's threads get to finish after the test before they count as leaked.
THREAD_GRACE_SECONDS = 5.0

# Keep the suite quiet and offline: no telemetry upload, no hub lookups.
os.environ.setdefault("TINKER_TELEMETRY", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# One Hugging Face cache per test session, shared by this process and the torch server (which
# registers its tiny model's tokenizer there): set before anything imports huggingface_hub.
SESSION_HF_HOME = Path(tempfile.mkdtemp(prefix="tinkex-tests-hf-"))
os.environ["HF_HOME"] = str(SESSION_HF_HOME)


def _leaked(before: set[int]) -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t.ident not in before
        and t.is_alive()
        and not t.name.startswith(ALLOWED_THREAD_PREFIXES)
        and not t.name.endswith(ALLOWED_THREAD_SUFFIXES)
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


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(SESSION_HF_HOME, ignore_errors=True)
    SECRET_SCAN.stop()
    if SECRET_SCAN.hits:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# ---------------------------------------------------------------------------- secret scan
SECRET_SCAN = SecretScan()
_stop_server = ServerHandle.stop


def _stop_and_scan(self: ServerHandle, *args: object, **kwargs: object) -> int:
    # Every embedded server's log is scanned once it stopped (before its directory goes).
    code = _stop_server(self, *args, **kwargs)  # type: ignore[arg-type]
    SECRET_SCAN.check_file(f"server-log {self.engine}:{self.port}", self.log_path)
    return code


ServerHandle.stop = _stop_and_scan  # type: ignore[method-assign]


def pytest_sessionstart(session: pytest.Session) -> None:
    SECRET_SCAN.start()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # A phase's report repeats the sections of the phases before it: scan each once.
    for title, content in report.sections:
        if title.endswith(report.when):
            SECRET_SCAN.check(f"output {report.nodeid} [{title}]", content)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminalreporter.write_line(SECRET_SCAN.summary(), red=bool(SECRET_SCAN.hits))


# ---------------------------------------------------------------------------- embedded servers
#: Flags of the shared null server: short TTLs for expiry tests, two-datum forward_backward
#: chunks (so SDK chunks arrive concurrently, first chunk last) and zstd request bodies.
NULL_SERVER_ARGS = (
    "--min-ttl-seconds=1",
    "--expiry-sweep-interval=1",
    "--poll-hold-seconds=2",
    "--max-body-bytes=4194304",
    "--client-config=fwdbwd_max_chunk_len=2",
    "--client-config=proto_compress_fwdbwd=true",
)


@pytest.fixture(scope="session")
def null_server() -> Iterator[ServerHandle]:
    """One null-engine server per test session (started on first use; see tests/_servers.py)."""
    with session_server("null", extra_args=NULL_SERVER_ARGS) as handle:
        yield handle


@pytest.fixture(scope="session")
def torch_server() -> Iterator[ServerHandle]:
    """One torch-engine server per test session, sharing this process's HF_HOME."""
    with session_server("torch", hf_home=SESSION_HF_HOME, ready_timeout=120.0) as handle:
        yield handle


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A self-signed certificate and key for 127.0.0.1 (PEM files; skips without openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out", str(cert),
            "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    yield cert, key
    shutil.rmtree(folder, ignore_errors=True)
