"""Draw ``bench/results/peers.json`` as ``docs/images/peers.png``: drain
throughput with one and four workers, and p50 latency, per system.

Run: ``.venv/bin/python -m bench.peers.plot`` (``bench/run-peers`` does).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

from matplotlib import pyplot

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results" / "peers.json"
IMAGE = ROOT / "docs" / "images" / "peers.png"

#: Flask-Offload's bars stand out; the peers share one colour per engine.
COLOURS = {"offload": "#2f6fde", "redis": "#d9534f", "postgres": "#5b8a3c"}


def colour(row: dict[str, Any]) -> str:
    if row["key"].startswith("offload"):
        return COLOURS["offload"]

    return COLOURS[row["engine"]]


def main() -> None:
    data = json.loads(RESULTS.read_text())
    rows = data["results"]
    labels = [f"{row['label']}\n{row['engine']}" for row in rows]
    colours = [colour(row) for row in rows]

    figure, axes = pyplot.subplots(1, 3, figsize=(15, 5.5), constrained_layout=True)
    panels = [
        ("drain_1_per_s", "Drain, 1 worker (jobs/s, higher is better)", "{:,.0f}"),
        ("drain_4_per_s", "Drain, 4 workers (jobs/s, higher is better)", "{:,.0f}"),
        ("latency_p50_ms", "Enqueue to start, p50 (ms, lower is better)", "{:.2f}"),
    ]
    for axis, (field, title, number) in zip(axes, panels, strict=True):
        values = [row[field] for row in rows]
        bars = axis.barh(labels, values, color=colours)
        axis.invert_yaxis()
        axis.set_title(title, fontsize=11)
        axis.bar_label(bars, labels=[number.format(v) for v in values], padding=3)
        axis.margins(x=0.25)
        axis.tick_params(axis="y", labelsize=9)
        if axis is not axes[0]:
            axis.set_yticklabels([])

    machine = data["machine"]
    figure.suptitle(
        f"{data['jobs']:,} no-op jobs, worker processes of one thread each; "
        f"{machine['cpu']}, {machine['usable_cores']} cores, "
        f"{machine['python']}",
        fontsize=10,
    )
    IMAGE.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(IMAGE, dpi=110)
    print(f"Wrote {IMAGE}")


if __name__ == "__main__":
    main()
