"""``results/latency.png``: p50 and p99 latency against connections, Fusebox vs direct.

matplotlib is optional: ``make bench`` installs it into the venv when PyPI is
reachable; without it the chart is skipped with a message.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path


def _series(
    results: dict[str, Any], prefix: str, label: str, conns: list[int]
) -> dict[str, list[float]]:
    runs = [results["runs"][f"{prefix}_c{c}"][label]["median"] for c in conns]
    return {q: [run[f"{q}_ms"] for run in runs] for q in ("p50", "p99")}


def write_chart(path: Path, results: dict[str, Any]) -> str:
    """Draw the chart into ``path``; return what was done, for the console."""
    if importlib.util.find_spec("matplotlib") is None:
        return "chart skipped: matplotlib is not installed (pip install matplotlib)"
    import matplotlib as mpl  # noqa: PLC0415 - optional

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    labels = ["direct", *results["plan"]["servers"]]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, prefix, title in zip(
        axes,
        ("plain", "stream"),
        ("non-streaming", "streaming (11 events)"),
        strict=True,
    ):
        conns = results["plan"][f"{prefix}_conns"]
        for label in labels:
            series = _series(results, prefix, label, conns)
            line = ax.plot(conns, series["p50"], marker="o", label=f"{label} p50")[0]
            ax.plot(
                conns,
                series["p99"],
                marker="x",
                linestyle="--",
                color=line.get_color(),
                label=f"{label} p99",
            )
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="connections",
            ylabel="latency (ms)",
            title=title,
        )
        ax.set_xticks(conns, [str(c) for c in conns])
        ax.grid(visible=True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Fusebox vs the fake upstream direct (one gateway worker, 1 core)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"chart written: {path}"
