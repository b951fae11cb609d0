"""Write the latest table from ``bench/results/latest.json`` into the pages that show it.

``bench/README.md`` and ``docs/performance.md`` each hold one block between
``<!-- latest-table -->`` and ``<!-- /latest-table -->``; this replaces it with the run's date,
machine, command and table, so the pages never drift from the JSON. ``python -m bench`` calls it
after a full run; alone: ``.venv/bin/python -m bench.report [latest.json]``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_INPUT = ROOT / "bench" / "results" / "latest.json"
PAGES = (ROOT / "bench" / "README.md", ROOT / "docs" / "performance.md")
START, END = "<!-- latest-table -->", "<!-- /latest-table -->"
_BLOCK = re.compile(re.escape(START) + r".*?" + re.escape(END), re.DOTALL)


def block(result: dict[str, Any]) -> str:
    """The Markdown block (markers included) for ``result``, a ``latest.json``."""
    host = result["machine"]
    rows = result["rows"]
    judged = [row for row in rows if row["met"] != "-"]
    missed = [row["workload"] for row in judged if row["met"] == "NO"]
    summary = f"targets met: {len(judged) - len(missed)}/{len(judged)}"
    reps = f"{result['settings']['reps']} repetitions"
    if any(row["workload"].startswith("7 ") for row in rows):
        reps += f", {result['settings'].get('load_reps', '?')} for workload 7"
    if missed:
        summary += "; missed: " + ", ".join(missed)
    return "\n".join(
        [
            START,
            (
                f"Run {result['date'].replace('T', ' ')} on {host['cpu']} "
                f"({host['cores']} cores, {host['memory']}), Python {host['python']}, "
                f"tinker {host['versions']['tinker']}, in {result['elapsed_s']:.0f} s; "
                f"command `{result['command']}` (medians of {reps}; min, max and every "
                "value in `bench/results/latest.json`)."
            ),
            "",
            "```text",
            result["table"],
            summary,
            "```",
            END,
        ]
    )


def update(result: dict[str, Any], pages: tuple[Path, ...] = PAGES) -> None:
    """Replace the latest-table block of every page in ``pages``."""
    text = block(result)
    for page in pages:
        content = page.read_text()
        if not _BLOCK.search(content):
            raise ValueError(f"{page}: no {START} ... {END} block")
        page.write_text(_BLOCK.sub(lambda _: text, content, count=1))


def main() -> None:
    """Update the pages from the JSON named on the command line (default: the latest)."""
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_INPUT
    update(json.loads(source.read_text()))


if __name__ == "__main__":
    main()
