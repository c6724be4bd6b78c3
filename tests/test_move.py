"""flask offload move: waiting jobs go to another store and run once, there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from flask_offload import Offload
from flask_offload.cli import offload_group
from flask_offload.stores import store_from_url
from tests.helpers import make_app
from tests.services import redis_url
from tests.stores.conftest import fresh_postgres_database


@pytest.fixture
def source(tmp_path: Path) -> Iterator[tuple[Flask, Offload]]:
    app, offload = make_app(tmp_path, OFFLOAD_WORKER_THREADS=0)
    offload.init_app(app)
    offload.task(name="tests.work")(lambda n: n)
    yield app, offload
    offload.close(app)


@pytest.fixture(params=["sqlite", "postgres", "redis"])
def destination(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'new.sqlite3'}"
    if request.param == "postgres":
        return fresh_postgres_database()

    import redis

    url = redis_url()
    redis.Redis.from_url(url).flushdb()

    return url


def test_move_copies_waiting_jobs_and_cancels_them_here(
    source: tuple[Flask, Offload], destination: str
) -> None:
    app, offload = source
    work = offload.tasks["tests.work"]
    waiting = [work.enqueue(n) for n in range(5)]
    later = work.using(delay=3600).enqueue(99)
    done = work.enqueue(100)

    result = app.test_cli_runner().invoke(offload_group, ["move", "--to", destination])

    assert result.exit_code == 0, result.output
    assert "Moved 7 waiting job(s)" in result.output
    target = store_from_url(destination)
    target.open()
    try:
        moved = {job.id for job in waiting} | {later.id, done.id}
        assert all(target.get(job_id) is not None for job_id in moved)
        stored_later = target.get(later.id)
        assert stored_later is not None and stored_later.status == "scheduled"
    finally:
        target.close()
    assert offload.stats()["default"]["cancelled"] == 7
    assert offload.drain() == 0


def test_move_refuses_while_jobs_run_here(
    source: tuple[Flask, Offload], tmp_path: Path
) -> None:
    app, offload = source
    offload.tasks["tests.work"].enqueue(1)
    offload.state(app).store.claim("w1", None, 1, 30)

    result = app.test_cli_runner().invoke(
        offload_group, ["move", "--to", f"sqlite:///{tmp_path / 'new.sqlite3'}"]
    )

    assert result.exit_code == 1
    assert "1 job(s) are running" in result.output


def test_move_with_finished_copies_finished_jobs_and_keeps_them_here(
    source: tuple[Flask, Offload], tmp_path: Path
) -> None:
    app, offload = source
    job = offload.tasks["tests.work"].enqueue(7)
    offload.drain()
    url = f"sqlite:///{tmp_path / 'new.sqlite3'}"

    result = app.test_cli_runner().invoke(
        offload_group, ["move", "--to", url, "--finished"]
    )

    assert result.exit_code == 0, result.output
    assert "copied 1 finished job(s)" in result.output
    target = store_from_url(url)
    target.open()
    copied = target.get(job.id)
    target.close()
    assert copied is not None
    assert (copied.status, copied.result) == ("succeeded", "7")
    assert offload.stats()["default"]["succeeded"] == 1
