"""What the demo shows: a progress bar with the loss, a before/after table, the loss curve PNG."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

__all__ = ["Progress", "plot_losses", "table"]

#: The plain bar: ASCII, a fixed layout, every step drawn.
_PLAIN: dict[str, Any] = {
    "ascii": ".#",
    "bar_format": "{desc} [{bar:30}] {n}/{total} loss={loss} {elapsed_s:.1f}s",
    "mininterval": 0,
    "miniters": 1,
}


class Progress:
    """A tqdm progress bar with the loss per step.

    Args:
        total: number of steps.
        stream: where the bar goes (default stderr, like tqdm).
        plain: a plain ASCII line (``training [###...] 3/10 loss=1.234 0.8s``) instead of
            tqdm's default look, for logs.
    """

    def __init__(self, total: int, *, stream: TextIO | None = None, plain: bool = False) -> None:
        from tinkex_actors._progress import FieldBar

        self.total = total
        self.done = 0
        self._bar = FieldBar(
            total=total,
            desc="training",
            unit="step",
            file=stream or sys.stderr,
            leave=True,
            fields={"loss": "-"},
            **(_PLAIN if plain else {}),
        )

    def update(self, loss: float) -> None:
        """One step done with this loss (per completion token)."""
        self.done += 1
        self._bar.fields["loss"] = f"{loss:.3f}"
        self._bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        """Finish the bar."""
        self._bar.close()


def table(rows: Sequence[tuple[str, str, str, bool]]) -> str:
    """``prompt | before | after | ok`` rows as aligned text."""
    header = ("prompt", "before training", "after training", "")
    cells = [header] + [(p, repr(b), repr(a), "ok" if ok else "--") for p, b, a, ok in rows]
    widths = [min(48, max(len(row[i]) for row in cells)) for i in range(3)]

    def fit(text: str, width: int) -> str:
        return text if len(text) <= width else text[: width - 3] + "..."

    lines = [
        "  ".join(fit(row[i], widths[i]).ljust(widths[i]) for i in range(3)) + "  " + row[3]
        for row in cells
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def plot_losses(losses: Sequence[float], path: Path, title: str) -> Path | None:
    """Write the loss curve as a PNG (matplotlib, Agg backend); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, axes = plt.subplots(figsize=(7, 4), dpi=110)
    steps = list(range(1, len(losses) + 1))
    axes.plot(steps, losses, marker="o", markersize=3, linewidth=1.5)
    axes.set_xlabel("step")
    axes.set_ylabel("loss per completion token")
    axes.set_title(title)
    axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
