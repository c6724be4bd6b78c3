"""Several processes writing one SQLite file, as gunicorn workers with their
in-process workers do: with SQLite's busy handler alone, and with writers
queueing in :class:`~flask_offload.stores.sqlite_lock.SQLiteWriteLock`.

Usage: ``python -m bench.contention [--jobs N] [--processes 1,2,4]
[--variants busy,queue,strict,flock] [--repeat N] [--claim-pause S]``;
``bench/run-contention`` sets up the virtualenv first.

Each process enqueues its share of the jobs from one thread while a second
thread claims and finishes jobs in batches, as the worker does; the jobs
do nothing, so the database is the whole load. Reported: jobs enqueued
plus jobs finished per second, each process count against one process,
how long a write waited before its ``BEGIN IMMEDIATE`` returned, and any
``database is locked`` that escaped. ``--claim-pause`` shows what a worker
that waits a little after a claim that did not fill its batch would gain.

The store measured is :class:`~flask_offload.stores.SQLStore` with its two
write paths replaced by copies that time the wait and, for the lock
variants, hold the lock from before ``BEGIN IMMEDIATE`` until after
``COMMIT`` or ``ROLLBACK``: the integration the store itself is meant to
get.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

import sqlalchemy.exc
from sqlalchemy import Connection

from flask_offload.records import SUCCEEDED, JobRecord, Outcome, new_job_id
from flask_offload.stores import SQLStore
from flask_offload.stores.sqlite_lock import (
    DEFAULT_TURN,
    LockMode,
    SQLiteWriteLock,
    WaitTimes,
    percentile,
    write_lock_for,
)
from flask_offload.worker import CLAIM_PAUSE

from .machine import describe_machine


@dataclass(frozen=True, slots=True)
class Variant:
    """How writers wait for each other: ``mode`` is the lock's, or ``None``
    for no lock."""

    label: str
    mode: LockMode | None
    turn: float = DEFAULT_TURN


DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "contention.json"
VARIANTS = {
    "busy": Variant("SQLite's busy handler only: the store as it is", None),
    "queue": Variant("SQLiteWriteLock: a ticket queue, 5 ms turns", "queue"),
    "queue-2ms": Variant("SQLiteWriteLock: a ticket queue, 2 ms turns", "queue", 0.002),
    "strict": Variant("SQLiteWriteLock, a ticket queue without turns", "queue", 0.0),
    "flock": Variant("SQLiteWriteLock on flock, 5 ms turns (macOS, BSD)", "flock"),
}
#: As the worker claims jobs that take no time: the largest batch.
BATCH = 100
LEASE = 30.0
#: Enough to keep every wait of one process in a run.
RECORDED_WAITS = 1 << 17
GOALS = {"ratio": 0.8, "p99.9": 0.1}


class TimedStore(SQLStore):
    """The SQL store with its write transactions timed and, given a lock,
    taken only while holding it."""

    def __init__(self, url: str, lock: SQLiteWriteLock | None) -> None:
        super().__init__(url)
        self.lock = lock
        self.waits = WaitTimes(RECORDED_WAITS)

    @contextmanager
    def _write_cursor(self, *, relaxed: bool = False) -> Iterator[Any]:
        connection = self.engine.raw_connection()
        try:
            cursor = connection.cursor()
            with self._begun(lambda: cursor.execute("BEGIN IMMEDIATE")):
                try:
                    yield cursor
                except BaseException:
                    connection.rollback()
                    raise
                cursor.execute("COMMIT")
            cursor.close()
        finally:
            connection.close()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with (
            self.engine.connect() as connection,
            self._begun(lambda: connection.exec_driver_sql("BEGIN IMMEDIATE")),
        ):
            try:
                yield connection
            except BaseException:
                connection.exec_driver_sql("ROLLBACK")
                raise
            connection.exec_driver_sql("COMMIT")

    @contextmanager
    def _begun(self, begin: Callable[[], object]) -> Iterator[None]:
        """Hold the lock, if any, around a transaction that ``begin`` starts,
        and record how long the lock and ``BEGIN IMMEDIATE`` took together."""
        started = time.perf_counter_ns()
        if self.lock is None:
            begin()
            self.waits.add(time.perf_counter_ns() - started)
            yield
            return

        with self.lock:
            begin()
            self.waits.add(time.perf_counter_ns() - started)
            yield


@dataclass(slots=True)
class ProcessResult:
    """What one process did; times are ``time.time()`` seconds."""

    enqueued: int = 0
    finished: int = 0
    enqueue_done_at: float = 0.0
    last_finish_at: float = 0.0
    locked_errors: int = 0
    claims: int = 0
    waits_ns: list[int] = field(default_factory=list)
    max_wait_ns: int = 0
    mode: str = "none"


@dataclass(frozen=True, slots=True)
class Sample:
    """One run of one variant with one process count."""

    seconds: float
    processes: list[ProcessResult]


@dataclass(frozen=True, slots=True)
class Run:
    """The repeats of one variant with one process count, combined: the
    median throughput, and waits pooled over every repeat."""

    variant: str
    processes: int
    jobs: int
    repeats: int
    throughput: float
    throughputs: list[float]
    locked_errors: int
    mean_batch: float
    enqueue_spread: float
    wait: dict[str, float]
    mode: str

    @classmethod
    def combine(
        cls, variant: str, processes: int, jobs: int, samples: list[Sample]
    ) -> Run:
        results = [result for sample in samples for result in sample.processes]
        waits = sorted(wait for result in results for wait in result.waits_ns)
        throughputs = sorted(2 * jobs / sample.seconds for sample in samples)
        spreads = sorted(
            max(r.enqueue_done_at for r in sample.processes)
            / min(r.enqueue_done_at for r in sample.processes)
            for sample in samples
        )

        return cls(
            variant=variant,
            processes=processes,
            jobs=jobs,
            repeats=len(samples),
            throughput=statistics.median(throughputs),
            throughputs=throughputs,
            locked_errors=sum(result.locked_errors for result in results),
            mean_batch=jobs * len(samples) / sum(r.claims for r in results),
            enqueue_spread=statistics.median(spreads),
            wait={
                "count": len(waits),
                "p50": percentile(waits, 50) / 1e9,
                "p99": percentile(waits, 99) / 1e9,
                "p99.9": percentile(waits, 99.9) / 1e9,
                "max": max(result.max_wait_ns for result in results) / 1e9,
            },
            mode=results[0].mode,
        )


def run_process(
    url: str,
    variant: str,
    share: int,
    total: int,
    finished: Synchronized[int],
    barrier: Any,
    results: Any,
    pause: float,
) -> None:
    """One gunicorn worker's share: an enqueueing thread and a claiming
    thread on one store. Runs in a process of its own."""
    store = _make_store(url, variant)
    store.open()
    store.waits.reset()
    outcome = ProcessResult()
    counts_lock = threading.Lock()

    def locked(error: Exception) -> None:
        if "locked" not in str(error):
            raise error
        with counts_lock:
            outcome.locked_errors += 1

    def enqueue() -> None:
        for number in range(share):
            record = _job(number, store.clock())
            while True:
                try:
                    store.enqueue(record)
                    break
                except (sqlite3.OperationalError, sqlalchemy.exc.OperationalError) as e:
                    locked(e)
        outcome.enqueued = share
        outcome.enqueue_done_at = time.time()

    def claim_and_finish() -> None:
        worker = f"bench-{variant}-{threading.get_native_id()}"
        outcomes: list[Outcome] = []
        while True:
            try:
                applied, claimed = store.finish_and_claim(
                    worker, outcomes, None, BATCH, LEASE
                )
            except (sqlite3.OperationalError, sqlalchemy.exc.OperationalError) as e:
                locked(e)
                continue

            outcome.claims += 1
            if applied:
                outcome.finished += len(applied)
                outcome.last_finish_at = time.time()
                with finished.get_lock():
                    finished.value += len(applied)
            now = store.clock()
            outcomes = [
                Outcome(job.id, job.attempts, SUCCEEDED, now, result="null")
                for job in claimed
            ]
            if not outcomes:
                if finished.value >= total:
                    return
                store.wait_for_work(0.05)
            elif len(outcomes) < BATCH and pause:
                time.sleep(pause)

    threads = [
        threading.Thread(target=enqueue, name="bench-enqueue"),
        threading.Thread(target=claim_and_finish, name="bench-claim"),
    ]
    barrier.wait()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    outcome.waits_ns = store.waits.recent()
    outcome.max_wait_ns = store.waits.max_ns
    outcome.mode = "none" if store.lock is None else store.lock.mode
    store.close()
    results.put(asdict(outcome))


def _make_store(url: str, variant: str) -> TimedStore:
    chosen = VARIANTS[variant]
    lock = None
    if chosen.mode is not None:
        lock = write_lock_for(
            url.removeprefix("sqlite:///"),
            mode=chosen.mode,
            turn=chosen.turn,
            recorded_waits=RECORDED_WAITS,
        )

    return TimedStore(url, lock)


def _job(number: int, now: float) -> JobRecord:
    """A job as ``Task.enqueue`` builds it for ``noop(number)``."""
    return JobRecord(
        id=new_job_id(),
        task="bench.noop",
        arguments=json.dumps({"args": [number], "kwargs": {}}),
        enqueued_at=now,
        run_at=now,
    )


def measure(variant: str, processes: int, jobs: int, pause: float) -> Sample:
    """Run the processes once on a fresh database; times in the results are
    seconds since they all started."""
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="offload-contention-") as directory:
        url = f"sqlite:///{Path(directory) / 'offload.sqlite3'}"
        # Created once here, so that no process measures the migration.
        SQLStore(url).open()
        finished = context.Value("q", 0)
        barrier = context.Barrier(processes + 1)
        results = context.Queue()
        shares = [jobs // processes + (i < jobs % processes) for i in range(processes)]
        children = [
            context.Process(
                target=run_process,
                args=(url, variant, share, jobs, finished, barrier, results, pause),
                name=f"bench-contention-{i}",
            )
            for i, share in enumerate(shares)
        ]
        for child in children:
            child.start()
        barrier.wait(timeout=60)
        started = time.time()
        outcomes = [ProcessResult(**results.get(timeout=600)) for _ in children]
        for child in children:
            child.join()

    done = sum(outcome.finished for outcome in outcomes)
    if done != jobs:
        raise RuntimeError(f"{done} jobs finished, not {jobs}.")
    for outcome in outcomes:
        outcome.enqueue_done_at -= started
        outcome.last_finish_at -= started
    ended = max(max(o.enqueue_done_at, o.last_finish_at) for o in outcomes)

    return Sample(seconds=ended, processes=outcomes)


def render(runs: Sequence[Run]) -> str:
    single = {run.variant: run.throughput for run in runs if run.processes == 1}
    lines = [
        f"{'variant':8} {'procs':>5} {'jobs/s':>8} {'vs 1':>6} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'p99.9 ms':>9} {'max ms':>8} {'enq. spread':>11} "
        f"{'locked':>6} {'batch':>6}",
    ]
    for run in runs:
        ratio = run.throughput / single[run.variant] if run.variant in single else 0
        spread = run.enqueue_spread
        lines.append(
            f"{run.variant:8} {run.processes:5d} {run.throughput:8.0f} "
            f"{ratio:6.2f} {run.wait['p50'] * 1e3:8.2f} "
            f"{run.wait['p99'] * 1e3:8.2f} {run.wait['p99.9'] * 1e3:9.2f} "
            f"{run.wait['max'] * 1e3:8.1f} {spread:11.2f} {run.locked_errors:6d} "
            f"{run.mean_batch:6.1f}"
        )
    lines += [
        "",
        "jobs/s: jobs enqueued plus jobs finished, per second, all processes;"
        " the median of the repeats.",
        "vs 1: against the same variant with one process.",
        "p50 ... max: wait for the lock and BEGIN IMMEDIATE, over every write"
        " of every repeat.",
        "enq. spread: the last process to finish enqueueing its share, against "
        "the first.",
        "locked: 'database is locked' errors that reached the caller.",
        "batch: jobs per claim transaction, on average.",
    ]
    lines += [f"{key}: {variant.label}" for key, variant in VARIANTS.items()]

    return "\n".join(lines)


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run-contention",
        description="Throughput and write-lock waits of several processes "
        "sharing one SQLite file.",
    )
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument(
        "--processes", type=_numbers, default=[1, 2, 4], help="e.g. 1,2,4"
    )
    parser.add_argument(
        "--variants",
        type=lambda text: text.split(","),
        default=list(VARIANTS),
        help=f"any of {','.join(VARIANTS)}",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of each case; the table shows the median (default: 1)",
    )
    parser.add_argument(
        "--claim-pause",
        type=float,
        default=CLAIM_PAUSE,
        help="seconds the claiming thread waits after a claim that was not a "
        f"full batch (default: {CLAIM_PAUSE}, as the worker does)",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    arguments = parser.parse_args(argv)
    unknown = sorted(set(arguments.variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(map(repr, unknown))}")

    return arguments


def _numbers(text: str) -> list[int]:
    try:
        numbers = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be whole numbers separated by commas, not {text!r}"
        ) from None
    if min(numbers) < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text!r}")

    return numbers


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    cases = [(v, p) for v in arguments.variants for p in arguments.processes]
    samples: dict[tuple[str, int], list[Sample]] = {case: [] for case in cases}
    # Repeats go round all the cases, so that a slow spell of the machine
    # spreads over every variant instead of falling on one.
    for repeat in range(1, arguments.repeat + 1):
        for variant, processes in cases:
            print(
                f"Running {variant} with {processes} process(es), "
                f"{repeat} of {arguments.repeat}",
                file=sys.stderr,
                flush=True,
            )
            samples[variant, processes].append(
                measure(variant, processes, arguments.jobs, arguments.claim_pause)
            )
    runs = [Run.combine(v, p, arguments.jobs, samples[v, p]) for v, p in cases]

    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(
        json.dumps(
            {
                "generated_at": datetime.now(timezone.utc).isoformat(),
                "machine": describe_machine(),
                "jobs": arguments.jobs,
                "batch": BATCH,
                "variants": {key: asdict(v) for key, v in VARIANTS.items()},
                "goals": GOALS,
                "repeat": arguments.repeat,
                "claim_pause": arguments.claim_pause,
                "runs": [asdict(run) for run in runs],
            },
            indent=2,
        )
        + "\n"
    )
    print(render(runs))

    return 0


if __name__ == "__main__":
    sys.exit(main())
