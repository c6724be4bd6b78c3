"""Flask-Offload on PostgreSQL and on Redis: the same app code with
OFFLOAD_URL changed, and worker processes standing for separate machines."""

from __future__ import annotations

import itertools
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_offload import Offload, Task
from tests.helpers import make_app
from tests.processes import BackgroundCommand, read_events, run_flask_command, wait_for
from tests.services import redis_url
from tests.stores.conftest import fresh_postgres_database


@pytest.fixture(params=["postgres", "redis"])
def remote(request: pytest.FixtureRequest) -> str:
    """The URL of an empty store on a server."""
    if request.param == "postgres":
        return fresh_postgres_database()

    import redis

    url = redis_url()
    redis.Redis.from_url(url).flushdb()

    return url


@pytest.fixture
def apps(tmp_path: Path, remote: str) -> Iterator[list[tuple[Flask, Offload]]]:
    pairs = []
    for name in ("web", "worker"):
        app, offload = make_app(
            tmp_path / name, OFFLOAD_URL=remote, OFFLOAD_WORKER_THREADS=0
        )
        app.name = name
        offload.init_app(app)
        offload.task(name="tests.double")(lambda n: n * 2)
        pairs.append((app, offload))
    yield pairs
    for app, offload in pairs:
        offload.close(app)


def test_a_job_enqueued_by_one_app_runs_on_another_apps_worker(
    apps: list[tuple[Flask, Offload]],
) -> None:
    (_, web), (worker_app, worker) = apps
    worker.start_worker(worker_app)
    time.sleep(0.2)  # the worker is idle and listening

    job = web.tasks["tests.double"].enqueue(21)

    assert job.wait(timeout=10) == 42
    assert web.stats()["default"]["succeeded"] == 1


def test_worker_processes_on_a_server_lose_nothing_when_one_is_killed(
    tmp_path: Path, remote: str
) -> None:
    settings = {"url": remote, "threads": "0", "lease": "1"}
    run_flask_command(tmp_path, "enqueue-some", "300", **settings)
    workers = [
        BackgroundCommand(tmp_path, "offload", "worker", "--threads", "2", **settings)
        for _ in range(3)
    ]
    try:
        wait_for(lambda: len(read_events(tmp_path)) >= 50, what="jobs to start")
        workers[0].process.send_signal(signal.SIGKILL)
        workers[0].wait()

        wait_for(
            lambda: len({e[1] for e in read_events(tmp_path)}) == 300,
            timeout=60,
            what="all 300 jobs to run",
        )
    finally:
        for worker in workers[1:]:
            worker.signal(signal.SIGTERM)
            worker.wait()

    done = Counter(event[1] for event in read_events(tmp_path))
    assert set(done) == {f"cli-{n}" for n in range(300)}
    repeated = {tag for tag, count in done.items() if count > 1}
    killed = str(workers[0].pid)
    for tag in repeated:
        runs = [e for e in read_events(tmp_path) if e[1] == tag]
        assert any(e[2] == killed for e in runs), f"{tag} ran twice: {runs}"


def test_hand_overs_under_load_run_each_job_once_and_keep_the_limits(
    tmp_path: Path, remote: str
) -> None:
    """Two worker apps (five threads) and a web app, one process standing
    for three machines: jobs enqueued from four threads of the web app and
    from a worker app itself, plain, under a concurrency key, and in a
    one-at-a-time queue. Idle threads are handed jobs (Redis inboxes,
    PostgreSQL offers, a worker's own threads) while others claim."""
    import threading

    runs: list[tuple[int, str, float, float]] = []
    lock = threading.Lock()

    def work(number: int, lane: str) -> None:
        started = time.monotonic()
        if lane != "plain":
            time.sleep(0.002)
        with lock:
            runs.append((number, lane, started, time.monotonic()))

    apps = []
    for name, threads in (("web", 0), ("worker-a", 3), ("worker-b", 2)):
        app, offload = make_app(
            tmp_path / name,
            OFFLOAD_URL=remote,
            OFFLOAD_WORKER_THREADS=0,
            OFFLOAD_QUEUES={"serial": {"concurrency": 1}},
        )
        app.name = name
        offload.init_app(app)
        offload.task(name="tests.work")(work)
        apps.append((app, offload, threads))
    try:
        for app, offload, threads in apps[1:]:
            offload.start_worker(app, threads=threads)
        time.sleep(0.3)

        web = apps[0][1].tasks["tests.work"]
        own = apps[1][1].tasks["tests.work"]

        def enqueue(first: int, count: int, task: Task[Any, Any]) -> None:
            for number in range(first, first + count):
                lane = ("plain", "key", "serial")[number % 3]
                if lane == "key":
                    task.using(concurrency_key=f"k{number % 2}").enqueue(number, lane)
                elif lane == "serial":
                    task.using(queue="serial").enqueue(number, lane)
                else:
                    task.enqueue(number, lane)
                if number % 7 == 0:
                    time.sleep(0.003)  # let threads go idle now and then

        producers = [
            threading.Thread(target=enqueue, args=(n * 150, 150, web)) for n in range(4)
        ] + [threading.Thread(target=enqueue, args=(600, 120, own))]
        for producer in producers:
            producer.start()
        for producer in producers:
            producer.join()

        wait_for(lambda: len(runs) >= 720, timeout=60)
        time.sleep(0.3)  # anything run twice would show up by now
    finally:
        for app, offload, _ in apps:
            offload.close(app)

    assert sorted(number for number, *_ in runs) == list(range(720))
    for lane in ("serial", "key"):
        spans = sorted(
            (start, end, number % 2 if lane == "key" else 0)
            for number, kind, start, end in runs
            if kind == lane
        )
        for group in {group for *_, group in spans}:
            mine = [(start, end) for start, end, g in spans if g == group]
            overlaps = [(a, b) for a, b in itertools.pairwise(mine) if b[0] < a[1]]
            assert not overlaps, f"{lane} jobs of group {group} overlapped"
