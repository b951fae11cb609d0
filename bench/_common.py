"""What every workload shares: statistics, result rows, the table, machine facts.

A :class:`Row` is one line of the table: a workload's figure for our SDK, the official SDK and
a floor (the bare-HTTP or engine-only lower bound), each a :class:`Stat` (median / min / max
over the repetitions), plus the target the figure is held to.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

#: Base model of the embedded server's engines (the null engine simulates it).
MODEL = "tinkex/tiny-llama"
#: The key every benchmark server accepts.
API_KEY = "tml-bench-0123456789abcdef01234567"


@dataclass(frozen=True)
class Stat:
    """Median / min / max of one figure over the repetitions."""

    median: float
    low: float
    high: float
    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Iterable[float]) -> Stat:
        """The statistics of ``values`` (at least one)."""
        seq = tuple(values)
        return cls(statistics.median(seq), min(seq), max(seq), seq)

    def scaled(self, factor: float) -> Stat:
        """The same figure in another unit."""
        return Stat.of(v * factor for v in self.values)

    def text(self, digits: int) -> str:
        """``median`` with ``digits`` decimals (the range goes in the JSON and README)."""
        return f"{self.median:.{digits}f}"


@dataclass
class Target:
    """What a figure must reach.

    ``kind`` is one of ``"official"`` (ours / official <= limit), ``"official_min"``
    (ours / official >= limit: throughput), ``"floor"`` (ours / floor <= limit) or
    ``"absolute"`` (ours <= limit).
    """

    kind: str
    limit: float

    def text(self) -> str:
        """The target as the table shows it."""
        return {
            "official": f"<= {self.limit:g}x off.",
            "official_min": f">= {self.limit:g}x off.",
            "floor": f"<= {self.limit:g}x floor",
            "absolute": f"<= {self.limit:g}",
        }[self.kind]


@dataclass
class Row:
    """One line of the table (and one entry of ``latest.json``).

    ``higher_is_better`` flips how ratios read (throughput); ``floor_label`` names the floor.
    """

    workload: str
    unit: str
    ours: Stat | None
    official: Stat | None = None
    floor: Stat | None = None
    floor_label: str = ""
    extra: dict[str, Stat] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    digits: int = 2
    note: str = ""
    ratios: bool = True

    def ratio_official(self) -> float | None:
        """ours / official (medians); None where a ratio means nothing (differences)."""
        if not self.ratios or self.ours is None or self.official is None:
            return None
        if not self.official.median:
            return None
        return self.ours.median / self.official.median

    def ratio_floor(self) -> float | None:
        """ours / floor (medians)."""
        if not self.ratios or self.ours is None or self.floor is None or not self.floor.median:
            return None
        return self.ours.median / self.floor.median

    def verdicts(self) -> list[bool]:
        """Whether each target is met (a missing figure fails its target)."""
        out = []
        for target in self.targets:
            if target.kind == "official":
                ratio = self.ratio_official()
                out.append(ratio is not None and ratio <= target.limit)
            elif target.kind == "official_min":
                ratio = self.ratio_official()
                out.append(ratio is not None and ratio >= target.limit)
            elif target.kind == "floor":
                ratio = self.ratio_floor()
                out.append(ratio is not None and ratio <= target.limit)
            else:
                out.append(self.ours is not None and self.ours.median <= target.limit)
        return out

    def met(self) -> str:
        """``yes`` / ``NO`` / ``-`` (no target)."""
        if not self.targets:
            return "-"
        return "yes" if all(self.verdicts()) else "NO"

    def to_json(self) -> dict[str, Any]:
        """The row for ``latest.json``."""

        def stat(s: Stat | None) -> dict[str, Any] | None:
            return None if s is None else asdict(s)

        return {
            "workload": self.workload,
            "unit": self.unit,
            "ours": stat(self.ours),
            "official": stat(self.official),
            "floor": stat(self.floor),
            "floor_label": self.floor_label,
            "extra": {k: stat(v) for k, v in self.extra.items()},
            "ratio_official": self.ratio_official(),
            "ratio_floor": self.ratio_floor(),
            "targets": [
                {"kind": t.kind, "limit": t.limit, "met": ok}
                for t, ok in zip(self.targets, self.verdicts(), strict=True)
            ],
            "met": self.met(),
            "note": self.note,
        }


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def format_table(rows: list[Row]) -> str:
    """The one table ``python -m bench`` prints."""
    header = (
        "workload",
        "unit",
        "ours",
        "official",
        "floor",
        "ours/off.",
        "ours/floor",
        "target",
        "met?",
    )
    lines: list[tuple[str, ...]] = [header]
    for row in rows:

        def cell(s: Stat | None, row: Row = row) -> str:
            return "-" if s is None else s.text(row.digits)

        floor = cell(row.floor)
        if row.floor is not None and row.floor_label:
            floor = f"{floor} ({row.floor_label})"
        lines.append(
            (
                row.workload,
                row.unit,
                cell(row.ours),
                cell(row.official),
                floor,
                _ratio(row.ratio_official()),
                _ratio(row.ratio_floor()),
                ", ".join(t.text() for t in row.targets) or "-",
                row.met(),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    numeric = {2, 3, 5, 6}
    out = []
    for n, line in enumerate(lines):
        cells = [
            c.rjust(w) if i in numeric and n else c.ljust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        out.append(" | ".join(cells).rstrip())
        if n == 0:
            out.append("-+-".join("-" * w for w in widths))
    return "\n".join(out)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = ""
    try:
        with open("/proc/meminfo") as info:
            total_kb = int(info.readline().split()[1])
            memory = f"{total_kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    versions = {}
    for module in ("tinker", "urllib3", "requests", "httpx", "uvicorn"):
        try:
            from importlib.metadata import version

            versions[module] = version(module)
        except Exception:
            versions[module] = "?"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": memory,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": os.getloadavg()[0],
        "versions": versions,
    }


def rss_and_threads() -> tuple[float, int]:
    """This process's resident set (MiB) and OS thread count (native threads included)."""
    rss, threads = 0.0, 0
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, threads


def python_command(*args: str) -> list[str]:
    """A command line running this interpreter on ``args``."""
    return [sys.executable, *args]


def run_quiet(command: list[str], timeout: float) -> str:
    """Run ``command``; its stdout (raises with its stderr on failure)."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


Progress = Callable[[str], None]
