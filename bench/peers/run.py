"""Run every system through the same phases and write the results.

For each system, on an emptied database:

1. Start one worker and wait until it has run a warm-up job, so that no
   system is timed importing itself.
2. Freeze the worker (SIGSTOP) and enqueue the jobs from the harness:
   enqueue throughput.
3. Let the worker go (SIGCONT): drain throughput with one worker, from that
   moment until the last job started.
4. With the worker idle for half a second, enqueue jobs 20 ms apart: the
   time from just before each enqueue call until the job started.
5. Stop it; start four workers, warm them all up, freeze them, enqueue the
   jobs again, let them go: drain throughput with four workers.

Then, unless ``--no-claim-cost``, the cost of one claim with 1,000 and with
1,000,000 finished jobs kept, for Flask-Offload's three stores and
Procrastinate (:mod:`bench.claim_cost`).

Run: ``bench/run-peers [--jobs N] [--latency-jobs N] [--only key,key]``.
Writes ``bench/results/peers.json``; ``python -m bench.peers.plot`` draws it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..claim_cost import measure_all, print_rows
from ..machine import describe_machine
from .report import Collector
from .systems import PEERS, Enqueue, Peer, environment, reset

RESULTS = Path(__file__).resolve().parents[1] / "results" / "peers.json"

#: Seconds a worker gets to start and run its warm-up job.
STARTUP_TIMEOUT = 60.0
#: Seconds one phase may take before the run fails.
PHASE_TIMEOUT = 600.0


@contextmanager
def workers(peer: Peer, count: int, report_address: str) -> Iterator[list[int]]:
    """Start ``count`` worker processes; yield their ids; stop them with
    SIGTERM (SIGKILL after ten seconds) on the way out."""
    env = {**os.environ, **environment(report_address), **peer.worker_env}
    processes = [
        subprocess.Popen(peer.worker, env=env, stdin=subprocess.DEVNULL)
        for _ in range(count)
    ]
    try:
        yield [process.pid for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def warm_up(collector: Collector, enqueue: Enqueue, pids: list[int]) -> None:
    """Enqueue a job every 50 ms until every worker process has run one."""
    phase = collector.expect(10**9)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    number = -1
    while not set(pids) <= set(phase.processes):
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{len(set(pids) & set(phase.processes))} of {len(pids)} workers "
                f"ran a job within {STARTUP_TIMEOUT:g} s; see their output above."
            )
        enqueue(number)
        number -= 1
        time.sleep(0.05)
    # Jobs enqueued while the last worker started may still be queued.
    time.sleep(0.5)


def drain(
    collector: Collector, enqueue: Enqueue, pids: list[int], jobs: int
) -> tuple[float, float]:
    """Enqueue ``jobs`` with the workers frozen, then let them go; return
    enqueue and drain throughput in jobs a second."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    phase = collector.expect(jobs)
    started = time.perf_counter()
    for number in range(jobs):
        enqueue(number)
    enqueue_rate = jobs / (time.perf_counter() - started)

    released = time.monotonic()
    for pid in pids:
        os.kill(pid, signal.SIGCONT)
    collector.wait(phase, PHASE_TIMEOUT)
    drain_rate = jobs / (max(phase.starts.values()) - released)

    return enqueue_rate, drain_rate


def latency(collector: Collector, enqueue: Enqueue, count: int) -> list[float]:
    """Milliseconds from just before each enqueue until the job started."""
    time.sleep(0.5)
    phase = collector.expect(count)
    enqueued_at = []
    first = time.monotonic() + 0.02
    for number in range(count):
        delay = first + number * 0.02 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        enqueued_at.append(time.monotonic())
        enqueue(number)
    collector.wait(phase, PHASE_TIMEOUT)

    return [
        (phase.starts[number] - enqueued_at[number]) * 1000 for number in range(count)
    ]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)

    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def measure(
    peer: Peer, collector: Collector, jobs: int, latency_jobs: int
) -> dict[str, Any]:
    reset(peer.engine)
    result: dict[str, Any] = {
        "key": peer.key,
        "label": peer.label,
        "engine": peer.engine,
        "version": peer.version(),
    }
    os.environ.update(environment(collector.address))
    with peer.client() as enqueue:
        with workers(peer, 1, collector.address) as pids:
            warm_up(collector, enqueue, pids)
            result["enqueue_per_s"], result["drain_1_per_s"] = drain(
                collector, enqueue, pids, jobs
            )
            latencies = latency(collector, enqueue, latency_jobs)
        with workers(peer, 4, collector.address) as pids:
            warm_up(collector, enqueue, pids)
            _, result["drain_4_per_s"] = drain(collector, enqueue, pids, jobs)

    result.update(
        latency_p50_ms=statistics.median(latencies),
        latency_p95_ms=percentile(latencies, 0.95),
        latency_p99_ms=percentile(latencies, 0.99),
    )

    return result


def print_table(results: list[dict[str, Any]]) -> None:
    print(
        f"{'system':20} {'engine':9} {'version':>9} {'enqueue/s':>10} "
        f"{'drain 1/s':>10} {'drain 4/s':>10} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
    )
    for row in results:
        print(
            f"{row['label']:20} {row['engine']:9} {row['version']:>9} "
            f"{row['enqueue_per_s']:>10,.0f} "
            f"{row['drain_1_per_s']:>10,.0f} {row['drain_4_per_s']:>10,.0f} "
            f"{row['latency_p50_ms']:>8.2f} {row['latency_p95_ms']:>8.2f} "
            f"{row['latency_p99_ms']:>8.2f}"
        )


def server_versions() -> dict[str, str]:
    import psycopg
    import redis

    from .systems import POSTGRES_DSN, REDIS_URL

    with psycopg.connect(POSTGRES_DSN) as connection:
        row = connection.execute("SHOW server_version").fetchone()
    postgres = str(row[0]) if row else "unknown"
    info = redis.Redis.from_url(REDIS_URL).info("server")

    return {"postgresql": postgres, "redis": str(info["redis_version"])}


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/run-peers")
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument(
        "--only", help="comma-separated keys: " + ", ".join(p.key for p in PEERS)
    )
    parser.add_argument(
        "--no-claim-cost",
        action="store_true",
        help="skip the claim cost with a million finished jobs (two minutes)",
    )
    parser.add_argument("--big", type=int, default=1_000_000)
    arguments = parser.parse_args()

    chosen = PEERS
    if arguments.only:
        keys = arguments.only.split(",")
        unknown = set(keys) - {peer.key for peer in PEERS}
        if unknown:
            parser.error(
                f"unknown system {', '.join(sorted(unknown))}; choose from "
                + ", ".join(peer.key for peer in PEERS)
            )
        chosen = [peer for peer in PEERS if peer.key in keys]

    collector = Collector()
    results = []
    for peer in chosen:
        print(f"== {peer.label}", file=sys.stderr, flush=True)
        results.append(measure(peer, collector, arguments.jobs, arguments.latency_jobs))
    print_table(results)
    claim_costs: list[dict[str, float | str]] = []
    if not arguments.no_claim_cost:
        print("== claim cost", file=sys.stderr, flush=True)
        claim_costs = measure_all(arguments.big)
        print_rows(claim_costs, arguments.big)

    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": describe_machine(),
                "servers": server_versions(),
                "python": platform.python_version(),
                "jobs": arguments.jobs,
                "latency_jobs": arguments.latency_jobs,
                "results": results,
                "claim_cost": {"big": arguments.big, "rows": claim_costs},
            },
            indent=2,
        )
        + "\n"
    )
    print(f"Wrote {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
