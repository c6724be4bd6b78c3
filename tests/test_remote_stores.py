"""Flask-Offload on PostgreSQL and on Redis: the same app code with
OFFLOAD_URL changed, and worker processes standing for separate machines."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from flask_offload import Offload
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
