"""Draw ``bench/results/peers.json`` as ``docs/images/peers.png``: drain
throughput with one and four workers and p50 latency per system, and the
claim cost with a thousand and a million finished jobs kept.

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


def shade(row: dict[str, Any], *, light: bool) -> str:
    """Flask-Offload's blue or the PostgreSQL peer's green, lighter for the
    small table."""
    if row["system"] == "procrastinate":
        return "#a9c79a" if light else COLOURS["postgres"]

    return "#9db8ec" if light else COLOURS["offload"]


def draw_claim_cost(axis: Any, claims: list[dict[str, Any]], big: int) -> None:
    """Two bars a system: one claim with 1,000 and with ``big`` finished
    jobs kept."""
    names = [
        "Procrastinate"
        if row["system"] == "procrastinate"
        else f"Flask-Offload\n{row['system']}"
        for row in claims
    ]
    places = range(len(claims))
    small = axis.barh(
        [p - 0.2 for p in places],
        [row["small_ms"] for row in claims],
        height=0.4,
        color=[shade(row, light=True) for row in claims],
        label="1,000 finished",
    )
    large = axis.barh(
        [p + 0.2 for p in places],
        [row["big_ms"] for row in claims],
        height=0.4,
        color=[shade(row, light=False) for row in claims],
        label=f"{big:,} finished",
    )
    for bars in (small, large):
        axis.bar_label(bars, fmt="%.2f", padding=3, fontsize=8)
    axis.set_yticks(list(places), names, fontsize=9)
    axis.invert_yaxis()
    axis.margins(x=0.25)
    axis.legend(loc="lower right", fontsize=8)
    axis.set_title("One claim (ms, lower is better)", fontsize=11)


def main() -> None:
    data = json.loads(RESULTS.read_text())
    rows = data["results"]
    labels = [f"{row['label']}\n{row['engine']}" for row in rows]
    colours = [colour(row) for row in rows]

    claims = data.get("claim_cost", {}).get("rows", [])
    panels_count = 4 if claims else 3
    figure, axes = pyplot.subplots(
        1, panels_count, figsize=(5 * panels_count, 5.5), constrained_layout=True
    )
    panels = [
        ("drain_1_per_s", "Drain, 1 worker (jobs/s, higher is better)", "{:,.0f}"),
        ("drain_4_per_s", "Drain, 4 workers (jobs/s, higher is better)", "{:,.0f}"),
        ("latency_p50_ms", "Enqueue to start, p50 (ms, lower is better)", "{:.2f}"),
    ]
    for axis, (field, title, number) in zip(axes, panels, strict=False):
        values = [row[field] for row in rows]
        bars = axis.barh(labels, values, color=colours)
        axis.invert_yaxis()
        axis.set_title(title, fontsize=11)
        axis.bar_label(bars, labels=[number.format(v) for v in values], padding=3)
        axis.margins(x=0.25)
        axis.tick_params(axis="y", labelsize=9)
        if axis is not axes[0]:
            axis.set_yticklabels([])

    if claims:
        draw_claim_cost(axes[3], claims, data["claim_cost"]["big"])

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
