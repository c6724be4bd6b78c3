"""Latency of several systems measured at once, their enqueues taking turns.

The latency phase of :mod:`bench.peers.run` measures one system after
another, and on a shared machine the speed of the whole machine moves by
more between those minutes than the systems differ by. Here every chosen
system has one idle worker running at the same time, and the harness
enqueues to each in turn, 20 ms apart, so that each system meets the same
machine, job for job. Each round prints each system's p50 and p95.

Run: ``python -m bench.peers.interleaved huey,offload-redis [--jobs N]
[--rounds N]``, after ``bench/run-peers`` has installed the peers. Systems
on one engine share its benchmark database, which the run empties first;
their keys and tables do not meet.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from contextlib import ExitStack

from .report import Collector
from .run import PHASE_TIMEOUT, percentile, warm_up, workers
from .systems import PEERS, Enqueue, environment, reset

#: Seconds between one enqueue and the next, whichever system it is for.
GAP = 0.02


def measure_round(
    collector: Collector, enqueues: list[Enqueue], jobs: int
) -> list[list[float]]:
    """Enqueue ``jobs`` to each system in turn; return each system's
    latencies in milliseconds."""
    systems = len(enqueues)
    time.sleep(0.5)
    phase = collector.expect(jobs * systems)
    enqueued_at: dict[int, float] = {}
    first = time.monotonic() + GAP
    for turn in range(jobs * systems):
        delay = first + turn * GAP - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        enqueued_at[turn] = time.monotonic()
        enqueues[turn % systems](turn)
    collector.wait(phase, PHASE_TIMEOUT)

    return [
        [
            (phase.starts[turn] - enqueued_at[turn]) * 1000
            for turn in range(system, jobs * systems, systems)
        ]
        for system in range(systems)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.interleaved")
    parser.add_argument(
        "systems", help="comma-separated keys: " + ", ".join(p.key for p in PEERS)
    )
    parser.add_argument("--jobs", type=int, default=300, help="per system a round")
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()

    by_key = {peer.key: peer for peer in PEERS}
    keys = arguments.systems.split(",")
    unknown = [key for key in keys if key not in by_key]
    if unknown:
        parser.error(f"unknown system {', '.join(unknown)}; choose from {list(by_key)}")
    chosen = [by_key[key] for key in keys]

    collector = Collector()
    os.environ.update(environment(collector.address))
    for engine in {peer.engine for peer in chosen}:
        reset(engine)
    medians: dict[str, list[float]] = {peer.key: [] for peer in chosen}
    with ExitStack() as stack:
        enqueues = []
        for peer in chosen:
            enqueue = stack.enter_context(peer.client())
            pids = stack.enter_context(workers(peer, 1, collector.address))
            warm_up(collector, enqueue, pids)
            enqueues.append(enqueue)
        for number in range(1, arguments.rounds + 1):
            rounds = measure_round(collector, enqueues, arguments.jobs)
            for peer, latencies in zip(chosen, rounds, strict=True):
                medians[peer.key].append(statistics.median(latencies))
                print(
                    f"round {number}  {peer.key:16} p50 "
                    f"{statistics.median(latencies):6.3f} ms  p95 "
                    f"{percentile(latencies, 0.95):6.3f} ms",
                    flush=True,
                )
    for key, values in medians.items():
        print(f"{key:16} p50 by round: " + ", ".join(f"{v:.3f}" for v in values))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
