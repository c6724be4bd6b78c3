"""Worker processes on one SQLite queue, killed with SIGKILL at random while
they run jobs, and replaced.

A process that dies mid-job cannot report it, so its job runs again once its
lease expires; a process that dies after the job's side effect and before the
outcome is stored makes the side effect happen twice. The test checks that
this is the only way anything happens twice, that nothing is lost, and that
the serial queue and the concurrency keys never let two jobs run at once,
even while their holders die.

Each node is one ``python -m tests.apps.many_app`` process: a server with
an in-process worker and no gunicorn master, so a kill stops exactly one
worker and its time is known. Runs are compared by wall-clock time
(``time.time()``), which the tasks and the test read on the same machine.

The last test replays, in one process, a race that the chaos run's server
logs showed: a heartbeat meeting a job that had just ended.
"""

from __future__ import annotations

import math
import random
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask

from flask_offload import Offload, Worker
from flask_offload.stores import Heartbeat, SQLStore
from tests.apps.many_app import (
    SERIAL_QUEUE,
    Run,
    read_done,
    read_runs,
)
from tests.processes import MANY_APP_SERVER, Server, Servers, wait_for

SEED = 20240611
NODES = 3
KILLS = 6
#: Seconds between kills, drawn uniformly; with the replacements starting,
#: six kills take about 12 s.
KILL_EVERY = (1.0, 2.0)
JOB_SECONDS = 0.25
#: Jobs per lane. The serial lane, one job at a time, sets how long the test
#: takes: 50 jobs of 0.25 s plus what the kills cost, about 20 s in all.
LANES = {"serial": 50, "key-0": 30, "key-1": 30, "key-2": 30, "plain": 200}
SETTINGS = {
    "lease": "1",
    "threads": "2",
    "grace": "1",
    # Some jobs are killed more than once; none should fail for it here.
    "max_recoveries": "20",
}


@dataclass(frozen=True, slots=True)
class Kill:
    """A process the test killed: when it was certainly dead, and what it was
    running then."""

    pid: int
    at: float
    running: list[str]


def start_node(servers: Servers) -> Server:
    return servers.start(command=MANY_APP_SERVER, **SETTINGS)


def enqueue_every_lane(nodes: list[Server]) -> list[str]:
    """Enqueue every lane's jobs through the nodes in turn and return their
    tags. Each lane goes in one request, so its jobs are enqueued in order."""
    for number, (lane, count) in enumerate(LANES.items()):
        node = nodes[number % len(nodes)]
        node.post(f"/enqueue?lane={lane}&count={count}&seconds={JOB_SECONDS}&strict=0")

    return [f"{lane}/0/{n}" for lane, count in LANES.items() for n in range(count)]


def finished(store: SQLStore) -> int:
    return sum(
        counts["succeeded"] + counts["failed"] + counts["cancelled"]
        for counts in store.counts().values()
    )


def kill_and_replace(
    servers: Servers, nodes: list[Server], results: Path, chooser: random.Random
) -> Kill:
    """SIGKILL a random node and start another in its place. The time of the
    kill is read once the process is reaped, so it is no earlier than its
    death, and a run cut short is taken as busy until then."""
    victim = nodes.pop(chooser.randrange(len(nodes)))
    victim.signal(signal.SIGKILL)
    killed = Kill(
        pid=victim.process.pid,
        at=time.time(),
        running=[
            run.tag
            for run in read_runs(results)
            if run.pid == victim.process.pid and run.ended is None
        ],
    )
    print(f"killed {killed.pid} at {killed.at:.3f}, running {killed.running}")
    nodes.append(start_node(servers))

    return killed


def kill_while_running(
    servers: Servers, nodes: list[Server], results: Path, store: SQLStore, jobs: int
) -> list[Kill]:
    """Kill a random node every second or two, ``KILLS`` times, while jobs
    remain, and start a replacement each time."""
    chooser = random.Random(SEED)
    kills: list[Kill] = []
    while len(kills) < KILLS and finished(store) < jobs:
        time.sleep(chooser.uniform(*KILL_EVERY))
        kills.append(kill_and_replace(servers, nodes, results, chooser))

    return kills


def nonzero_counts(store: SQLStore) -> dict[str, dict[str, int]]:
    return {
        queue: {status: count for status, count in by_status.items() if count}
        for queue, by_status in store.counts().items()
    }


def completed_runs(runs: Iterable[Run]) -> dict[str, list[Run]]:
    """The runs that ended, by job."""
    completed: defaultdict[str, list[Run]] = defaultdict(list)
    for run in runs:
        if run.ended is not None:
            completed[run.tag].append(run)

    return completed


def repeated_by_survivors(
    runs: Iterable[Run], killed_at: dict[int, float]
) -> dict[str, list[Run]]:
    """Jobs whose side effect happened more than once in processes that were
    not killed. A killed process may have done a job's work and died before
    its outcome was stored; every other repeat is a bug. So each job with
    several completed runs has all of them but one in killed processes."""
    return {
        tag: tag_runs
        for tag, tag_runs in completed_runs(runs).items()
        if sum(run.pid not in killed_at for run in tag_runs) > 1
    }


def busy(run: Run, killed_at: dict[int, float]) -> tuple[float, float]:
    """When a run held its job: until it ended, or, if its process was killed
    first, until the kill."""
    return run.started, run.ended if run.ended is not None else killed_at[run.pid]


def overlapping(runs: Iterable[Run], killed_at: dict[int, float]) -> list[str]:
    """Pairs of runs that were busy at the same time, described."""
    found = []
    latest: Run | None = None
    latest_end = -math.inf
    for run in sorted(runs, key=lambda run: run.started):
        start, end = busy(run, killed_at)
        if latest is not None and start < latest_end:
            found.append(f"{run} began before {latest} ended")
        if end > latest_end:
            latest, latest_end = run, end

    return found


def start_order(runs: Iterable[Run]) -> list[str]:
    """The jobs in the order their runs started, a job run again straight
    after its killed run counted once."""
    tags = [run.tag for run in sorted(runs, key=lambda run: run.started)]

    return [tag for i, tag in enumerate(tags) if i == 0 or tags[i - 1] != tag]


def test_killed_workers_lose_nothing_repeat_only_their_jobs_and_keep_limits(
    servers: Servers, results: Path, store: SQLStore
) -> None:
    nodes = [start_node(servers) for _ in range(NODES)]
    tags = enqueue_every_lane(nodes)

    kills = kill_while_running(servers, nodes, results, store, len(tags))
    wait_for(
        lambda: finished(store) == len(tags),
        timeout=90,
        what=f"{len(tags)} jobs to end",
    )

    serial = LANES[SERIAL_QUEUE]
    assert nonzero_counts(store) == {
        "default": {"succeeded": len(tags) - serial},
        SERIAL_QUEUE: {"succeeded": serial},
    }
    assert sorted(read_done(results)) == sorted(tags)

    killed_at = {kill.pid: kill.at for kill in kills}
    runs = read_runs(results)
    cut_short = [run for run in runs if run.ended is None]
    assert [run for run in cut_short if run.pid not in killed_at] == []
    assert repeated_by_survivors(runs, killed_at) == {}, f"kills: {kills}"
    for lane in LANES.keys() - {"plain"}:
        lane_runs = [run for run in runs if run.lane == lane]
        overlaps = overlapping(lane_runs, killed_at)
        assert overlaps == [], f"{lane} ran jobs at once; kills: {kills}"
    serial_runs = [run for run in runs if run.lane == SERIAL_QUEUE]
    assert start_order(serial_runs) == [f"serial/0/{n}" for n in range(serial)]

    # The chaos did happen: jobs were cut short and ran again.
    assert len(kills) == KILLS
    assert cut_short, f"no kill interrupted a job: {kills}"
    assert any(run.attempt > 1 for run in runs)
    repeated = sum(len(again) > 1 for again in completed_runs(runs).values())
    print(
        f"{len(cut_short)} runs cut short, {len(runs) - len(tags)} runs again, "
        f"{repeated} side effects repeated by a killed process"
    )


class HeartbeatBehindFinish(SQLStore):
    """An SQL store whose heartbeat, once it covers the watched job, waits for
    that job's outcome to be stored before it goes on. This is the order the
    chaos test met when a heartbeat waited for the write lock behind the
    executor reporting that same job."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.watched = ""
        self.heartbeat_began = threading.Event()

    def heartbeat(self, worker: str, job_ids: Iterable[str], lease: float) -> Heartbeat:
        wanted = list(job_ids)
        if self.watched in wanted:
            self.heartbeat_began.set()
            wait_for(self._watched_ended, timeout=5, what="the job's outcome")

        return super().heartbeat(worker, wanted, lease)

    def _watched_ended(self) -> bool:
        job = self.get(self.watched)

        return job is not None and job.status != "running"


def test_a_job_that_ends_during_a_heartbeat_is_not_called_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'offload.sqlite3'}"
    app = Flask("heartbeat_race", instance_path=str(tmp_path))
    app.config.update(OFFLOAD_URL=url, OFFLOAD_WORKER_THREADS=0)
    offload = Offload(app)
    store = HeartbeatBehindFinish(url)

    @offload.task(name="wait_for_a_heartbeat")
    def wait_for_a_heartbeat() -> None:
        store.heartbeat_began.wait(5)

    with app.app_context():
        job = wait_for_a_heartbeat.enqueue()
    store.watched = job.id
    # A heartbeat every 0.1 s: the job ends while the first one runs.
    worker = Worker(store, offload.tasks.get, lease=0.3)
    worker.start()
    try:
        job.wait(timeout=5)
    finally:
        worker.stop(grace=1)
        offload.close(app)
        store.close()

    assert (job.status, job.attempts) == ("succeeded", 1)
    lost = [r for r in caplog.records if getattr(r, "action", "") == "lease_lost"]
    assert [record.getMessage() for record in lost] == []
