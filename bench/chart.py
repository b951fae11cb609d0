"""The chart of ``docs/performance.md``: latency and throughput from ``bench/results/latest.json``.

Three panels: sequential latency per call (forward_backward, optim_step, sample), sampling
fan-out throughput, and big-batch encode time; bars are medians, whiskers the min..max over
the repetitions. ``python -m bench`` redraws it after a full run; alone:
``.venv/bin/python -m bench.chart [--input JSON] [--output PNG]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_INPUT = ROOT / "bench" / "results" / "latest.json"
DEFAULT_OUTPUT = ROOT / "docs" / "performance.png"
COLORS = {
    "ours": "#2b7bba",
    "official": "#d95f02",
    "floor": "#7f7f7f",
    "requests": "#bdbdbd",
}


def _bars(ax: Any, groups: list[str], series: dict[str, list[dict[str, Any] | None]]) -> None:
    width = 0.8 / len(series)
    for i, (name, stats) in enumerate(series.items()):
        xs, heights, low, high = [], [], [], []
        for g, stat in enumerate(stats):
            if stat is None:
                continue
            xs.append(g + (i - (len(series) - 1) / 2) * width)
            heights.append(stat["median"])
            low.append(stat["median"] - stat["low"])
            high.append(stat["high"] - stat["median"])
        color = next((c for k, c in COLORS.items() if name.startswith(k)), None)
        ax.bar(xs, heights, width, label=name, color=color)
        ax.errorbar(xs, heights, yerr=[low, high], fmt="none", ecolor="black", capsize=2, lw=0.8)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups)


def draw(result: dict[str, Any], output: Path) -> None:
    """Draw the three panels of ``result`` (a ``latest.json``) into ``output``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {row["workload"]: row for row in result["rows"]}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))

    seq = [
        (label, rows.get(f"1 seq {name}"))
        for label, name in (
            ("forward_backward", "forward_backward 1x16"),
            ("optim_step", "optim_step"),
            ("sample (8 tokens)", "sample 8 tokens"),
        )
    ]
    seq = [(label, row) for label, row in seq if row is not None]
    if seq:
        _bars(
            axes[0],
            [label for label, _ in seq],
            {
                "ours (tinkex_actors)": [row["ours"] for _, row in seq],
                "official tinker": [row["official"] for _, row in seq],
                "floor: http.client": [row["floor"] for _, row in seq],
                "requests.Session": [row["extra"].get("requests") for _, row in seq],
            },
        )
        axes[0].set_ylabel("ms per call (submit + result)")
        axes[0].set_title("1. Sequential latency (lower is better)")
        axes[0].legend(fontsize=8)

    fan = next((row for name, row in rows.items() if name.startswith("2 fan-out") and
                row["unit"] == "samples/s"), None)  # fmt: skip
    if fan is not None:
        _bars(
            axes[1],
            [fan["workload"][2:]],
            {
                "ours (tinkex_actors)": [fan["ours"]],
                "official tinker": [fan["official"]],
                "floor: http.client x32": [fan["floor"]],
            },
        )
        axes[1].set_ylabel("samples per second")
        axes[1].set_title("2. Sampling fan-out (higher is better)")
        axes[1].legend(fontsize=8)

    enc = [(name.split(" ", 3)[-1], row) for name, row in rows.items() if name.startswith("3 ")]
    if enc:
        _bars(
            axes[2],
            [label for label, _ in enc],
            {
                "ours (tinkex_actors)": [row["ours"] for _, row in enc],
                "official tinker": [row["official"] for _, row in enc],
            },
        )
        axes[2].set_ylabel("ms (build datums + serialize)")
        settings = result.get("settings", {})
        shape = f"{settings.get('datums', '?')} x {settings.get('tokens', '?'):,}"
        axes[2].set_title(f"3. Encode {shape} tokens (lower is better)")
        axes[2].tick_params(axis="x", labelsize=8)
        axes[2].legend(fontsize=8)

    host = result.get("machine", {})
    fig.suptitle(
        f"tinkex_actors vs official tinker {host.get('versions', {}).get('tinker', '?')}, "
        f"{result.get('date', '')[:10]}, {host.get('cpu', '')} ({host.get('cores', '?')} cores), "
        f"medians of {result.get('settings', {}).get('reps', '?')} reps, whiskers min..max",
        fontsize=10,
    )
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)


def main() -> None:
    """Draw the chart from a results file."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    draw(json.loads(args.input.read_text()), args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
