"""Flask-Offload with its worker inside the app's process, against a plain
``queue.Queue`` and Huey's in-process consumer, on one machine in one run.

Usage: ``python -m bench.embedded [--jobs N] [--latency-jobs N]``; ``bench/run``
sets up the virtualenv first. Progress goes to stderr and the table to
stdout; the same results are written as JSON for the docs to quote.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .machine import describe_machine
from .report import build_report, render_text, write_json
from .systems import SYSTEMS
from .workloads import Workload, run_system

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "latest.json"


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run",
        description="Throughput and latency of Flask-Offload, queue.Queue and "
        "Huey, side by side.",
    )
    parser.add_argument(
        "--jobs",
        type=_at_least(1),
        default=10_000,
        help="jobs to enqueue and then drain (default: %(default)s)",
    )
    parser.add_argument(
        "--latency-jobs",
        type=_at_least(2),
        default=200,
        help="jobs for the latency percentiles (default: %(default)s)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="where to write the JSON results (default: bench/results/latest.json)",
    )

    return parser.parse_args(argv)


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type, so a bad count fails before any system runs rather
    than halfway through."""

    def check(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be a whole number, not {text!r}"
            ) from None
        if number < minimum:
            raise argparse.ArgumentTypeError(
                f"must be at least {minimum}, not {text!r}"
            )

        return number

    return check


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    workload = Workload(jobs=arguments.jobs, latency_jobs=arguments.latency_jobs)

    results = []
    for spec in SYSTEMS:
        print(f"Running {spec.key}: {spec.label}", file=sys.stderr, flush=True)
        results.append(run_system(spec, workload))

    report = build_report(workload, results, describe_machine())
    print(render_text(report))
    write_json(report, arguments.output)
    print(f"\nResults written to {arguments.output}", file=sys.stderr)

    return 0


if __name__ == "__main__":
    raise SystemExit(main())
