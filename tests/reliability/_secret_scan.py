"""A whole-session check that no API key shows up in anything the test run produced.

``tests/conftest.py`` starts one :class:`SecretScan` for the session. It sees

* every log record that reaches the root logger (a handler attached for the session; the
  library's WARNING and above always, lower levels whenever a test turns them on),
* every telemetry event the library emits (a handler attached to ``ALL_EVENTS``),
* every test's captured stdout, stderr and log sections (from the test reports),
* the log file of every embedded server the tests started and stopped,

and looks in each text for anything shaped like an API key: ``tml-`` followed by six or more
key characters, or a three-part JWT. (A masked key, ``tml-***``, does not match.) Texts are
scanned as they arrive and only hits are kept, so the check costs no memory. At the end of the
session every hit is reported and the run fails.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tinkex_actors import telemetry

__all__ = ["KEY_PATTERN", "Hit", "SecretScan"]

#: An unmasked API key: a static ``tml-`` key or a JWT (``eyJ<header>.<payload>.<signature>``).
KEY_PATTERN = re.compile(
    r"(?<![A-Za-z0-9])(?:tml-[A-Za-z0-9_\-]{6,}|eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+)"
)
_CONTEXT = 60
_HANDLER_ID = "tests.secret-scan"


class Hit(tuple[str, str]):
    """``(where, excerpt)`` of one key found."""

    __slots__ = ()

    def __str__(self) -> str:
        return f"{self[0]}: ...{self[1]}..."


class _LogHandler(logging.Handler):
    def __init__(self, scan: SecretScan) -> None:
        super().__init__(logging.NOTSET)
        self.scan = scan

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a record with bad arguments is still a record to look at
            text = f"{record.msg!r} {record.args!r}"
        if record.exc_info and record.exc_info[1] is not None:
            text += f" {record.exc_info[1]!r}"
        self.scan.check(f"log {record.name}", text)


class SecretScan:
    """Scans texts for API keys; see the module docstring."""

    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self.scanned: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._handler = _LogHandler(self)
        self._started = False

    def check(self, where: str, text: str) -> None:
        """Look for keys in ``text`` (from ``where``)."""
        kind = where.split(" ", 1)[0]
        found = [
            Hit((where, text[max(0, m.start() - _CONTEXT) : m.end() + _CONTEXT]))
            for m in KEY_PATTERN.finditer(text)
        ]
        with self._lock:
            self.scanned[kind] += 1
            self.hits.extend(found)

    def check_file(self, where: str, path: Path) -> None:
        """Scan a file (missing files are skipped)."""
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return
        self.check(where, text)

    def _on_event(
        self, event: Any, measurements: Mapping[str, Any], metadata: Mapping[str, Any], _: Any
    ) -> None:
        self.check(f"telemetry {'.'.join(event)}", f"{dict(measurements)!r} {dict(metadata)!r}")

    def start(self) -> None:
        """Attach the log and telemetry handlers."""
        if self._started:
            return
        self._started = True
        logging.getLogger().addHandler(self._handler)
        telemetry.attach(_HANDLER_ID, list(telemetry.ALL_EVENTS), self._on_event)

    def stop(self) -> None:
        """Detach the handlers."""
        if not self._started:
            return
        self._started = False
        logging.getLogger().removeHandler(self._handler)
        telemetry.detach(_HANDLER_ID)

    def summary(self) -> str:
        """What was scanned, and every hit."""
        counts = ", ".join(f"{n} {kind}" for kind, n in sorted(self.scanned.items()))
        lines = [f"secret scan: looked at {counts}; {len(self.hits)} API key(s) found"]
        lines += [f"  {hit}" for hit in self.hits[:20]]
        return "\n".join(lines)
