"""The results as a table for people and as JSON for the docs.

Both are built from the same rows, so the docs can never quote a number the
table did not show.
"""

from __future__ import annotations

import json
import os
import statistics
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .workloads import SystemResult, Workload

#: The ratio columns: Flask-Offload against the nearest peer and the floor,
#: each as it comes out of the box.
RATIOS: tuple[tuple[str, str], ...] = (("offload", "huey"), ("offload", "queue"))
#: Ratios printed under the table, which hold one difference constant: the
#: same durability (both sync every commit) and an idle Huey polling fast.
LIKE_FOR_LIKE: tuple[tuple[str, str, str], ...] = (
    ("offload-full", "huey", "both SQLite synchronous=FULL"),
    ("offload", "huey-1ms", "Huey polling every 1 ms"),
)
NOTE_WIDTH = 88
PERCENTILES = (50, 95, 99)


@dataclass(frozen=True, slots=True)
class Row:
    """One workload measured on every system."""

    workload: str
    unit: str
    better: str
    values: dict[str, float]

    def ratio(self, numerator: str, denominator: str) -> float | None:
        top, bottom = self.values.get(numerator), self.values.get(denominator)
        if top is None or not bottom:
            return None

        return top / bottom


@dataclass(frozen=True, slots=True)
class Report:
    generated_at: str
    workload: Workload
    machine: dict[str, object]
    results: list[SystemResult]
    rows: list[Row]


def build_report(
    workload: Workload, results: list[SystemResult], machine: dict[str, object]
) -> Report:
    rows = [
        Row("enqueue", "jobs/s", "higher", {r.key: r.enqueue_rate for r in results}),
        Row(
            "drain, 1 thread",
            "jobs/s",
            "higher",
            {r.key: r.drain_rate for r in results},
        ),
    ]
    for percentile in PERCENTILES:
        values = {r.key: latency_ms(r.latencies, percentile) for r in results}
        rows.append(Row(f"latency p{percentile}", "ms", "lower", values))
    generated_at = datetime.now(timezone.utc).isoformat(timespec="seconds")

    return Report(generated_at, workload, machine, results, rows)


def latency_ms(latencies: Sequence[float], percentile: int) -> float:
    """The ``percentile``-th percentile of ``latencies`` (seconds) in ms."""
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")

    return cuts[percentile - 1] * 1000


def render_text(report: Report) -> str:
    return "\n".join(
        [
            *_machine_lines(report.machine),
            "",
            *_table_lines(report),
            "",
            *_note_lines(report),
        ]
    )


def _machine_lines(machine: dict[str, object]) -> list[str]:
    packages = machine["packages"]
    assert isinstance(packages, dict)
    versions = ", ".join(f"{name} {number}" for name, number in packages.items())

    return [
        f"Machine: {machine['cpu']}, {machine['logical_cores']} cores "
        f"({machine['usable_cores']} usable), {machine['platform']}",
        f"Python {machine['python']}, SQLite {machine['sqlite']}",
        f"Packages: {versions}",
        f"Checkout: {machine['flask_offload_checkout']}; temporary files in "
        f"{machine['temp_dir']} ({machine['temp_filesystem']})",
    ]


def _table_lines(report: Report) -> list[str]:
    keys = [result.key for result in report.results]
    header = ["workload", "unit", *keys, *(f"{a}/{b}" for a, b in RATIOS)]
    body = [
        [
            row.workload,
            row.unit,
            *(_number(row.values[key], row.unit) for key in keys),
            *(_ratio(row.ratio(a, b)) for a, b in RATIOS),
        ]
        for row in report.rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def format_line(cells: list[str]) -> str:
        aligned = [
            cell.ljust(width) if column < 2 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]

        return "  ".join(aligned).rstrip()

    rule = "  ".join("-" * width for width in widths)

    return [format_line(header), rule, *(format_line(cells) for cells in body)]


def _note_lines(report: Report) -> list[str]:
    workload = report.workload
    paragraphs = [
        "jobs/s: higher is better; ms: lower is better. A ratio is the first "
        "system's number divided by the second's.",
        f"{workload.jobs:,} jobs enqueued one by one, then drained by one worker "
        f"thread; {workload.latency_jobs:,} latency jobs, one every "
        f"{workload.latency_interval * 1000:g} ms, after the worker sat idle for "
        f"{workload.idle_before_latency:g} s. Each system ran in a fresh "
        f"temporary directory.",
        *_like_for_like(report),
        *_outcome_delays(report),
    ]
    lines = [line for text in paragraphs for line in _wrap(text)]
    lines += ["", "Systems:"]
    for result in report.results:
        settings = ", ".join(f"{name}={value}" for name, value in _shown(result))
        lines += _wrap(f"{result.key}: {result.label}", indent="  ")
        lines += _wrap(settings, indent="      ")

    return lines


def _like_for_like(report: Report) -> list[str]:
    keys = {result.key for result in report.results}
    notes = []
    for first, second, held in LIKE_FOR_LIKE:
        if first not in keys or second not in keys:
            continue
        ratios = ", ".join(
            f"{row.workload} {_ratio(row.ratio(first, second))}" for row in report.rows
        )
        notes.append(f"{first}/{second} ({held}): {ratios}.")

    return notes


def _outcome_delays(report: Report) -> list[str]:
    return [
        f"{result.key} stored the last outcome {delay * 1000:.0f} ms after the "
        f"last drained job started; the drain time stops at the start."
        for result in report.results
        if (delay := result.outcomes_stored_after) is not None
    ]


def _wrap(text: str, indent: str = "") -> list[str]:
    return textwrap.wrap(
        text, NOTE_WIDTH, initial_indent=indent, subsequent_indent=indent
    )


def _shown(result: SystemResult) -> list[tuple[str, str]]:
    """The settings worth a line under the table; file paths only change
    from run to run."""
    hidden = {"store", "storage"}

    return [(k, v) for k, v in result.settings.items() if k not in hidden]


def _number(value: float, unit: str) -> str:
    if unit == "jobs/s":
        return f"{value:,.0f}"

    return f"{value:.2f}" if value < 100 else f"{value:,.0f}"


def _ratio(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 10:
        return f"{value:.0f}x"
    if value >= 0.1:
        return f"{value:.2f}x"

    return f"{value:.3f}x"


def to_json(report: Report) -> dict[str, object]:
    workload = report.workload

    return {
        "benchmark": "bench.embedded",
        "generated_at": report.generated_at,
        "parameters": {
            "jobs": workload.jobs,
            "latency_jobs": workload.latency_jobs,
            "latency_interval_ms": workload.latency_interval * 1000,
            "idle_before_latency_s": workload.idle_before_latency,
            "worker_threads": 1,
        },
        "machine": report.machine,
        "systems": {result.key: _system_json(result) for result in report.results},
        "table": [_row_json(row) for row in report.rows],
    }


def _system_json(result: SystemResult) -> dict[str, object]:
    latencies = result.latencies

    return {
        "label": result.label,
        "settings": dict(result.settings),
        "enqueue_jobs_per_s": round(result.enqueue_rate, 1),
        "drain_jobs_per_s": round(result.drain_rate, 1),
        "outcomes_stored_ms_after_drain": _ms_or_none(result.outcomes_stored_after),
        "latency_ms": {
            **{f"p{p}": round(latency_ms(latencies, p), 3) for p in PERCENTILES},
            "mean": round(statistics.fmean(latencies) * 1000, 3),
            "max": round(max(latencies) * 1000, 3),
        },
    }


def _ms_or_none(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _row_json(row: Row) -> dict[str, object]:
    pairs = [*RATIOS, *((a, b) for a, b, _ in LIKE_FOR_LIKE)]
    ratios = {f"{a}/{b}": row.ratio(a, b) for a, b in pairs}

    return {
        "workload": row.workload,
        "unit": row.unit,
        "better": row.better,
        "values": {key: round(value, 3) for key, value in row.values.items()},
        "ratios": {
            name: None if value is None else round(value, 4)
            for name, value in ratios.items()
        },
    }


def write_json(report: Report, path: Path) -> None:
    """Write through a temporary file, so an interrupted run never leaves a
    half-written file for the docs to quote."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(to_json(report), indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)
