"""An app for the tests that run many processes on one SQLite queue: gunicorn
under load, and processes killed at random.

Settings come from ``OFFLOAD_TEST_*`` environment variables (see
:func:`tests.processes.app_environment`), so each test says where the shared
instance folder is and how long leases last.

Every job leaves its side effects in a second SQLite file, the results
database, laid out so that a lost or a repeated job cannot hide:

- ``runs`` gets one row per attempt as it starts: the job's tag, the process,
  the attempt and the times it started and ended. ``ended`` stays NULL when
  the process died first.
- ``done`` gets the tag when the attempt ends, in the same transaction that
  sets ``ended``. Its primary key makes a second run of a strict job fail
  with ``IntegrityError``, which the task lets propagate so that the job
  ends ``failed`` in the queue, where the test sees it.

A tag reads ``lane/batch/number``. The lane is ``plain``, ``serial`` (the
queue limited to one running job) or ``key-N`` (a concurrency key with the
default limit of one), so the test can tell which limit a run was under.

``python -m tests.apps.many_app --bind 127.0.0.1:PORT`` serves the app on
Werkzeug's threaded server, one process whose worker can be killed without
a gunicorn master around it.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, current_app, request

from flask_offload import Offload, current_job

offload = Offload()

SERIAL_QUEUE = "serial"
RESULTS_FILE = "results.sqlite3"
RESULTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    job_tag TEXT NOT NULL,
    pid INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    started REAL NOT NULL,
    ended REAL
);
CREATE TABLE IF NOT EXISTS done (job_tag TEXT PRIMARY KEY);
"""


@dataclass(frozen=True, slots=True)
class Run:
    """One row of ``runs``: an attempt of the job ``tag`` in process ``pid``."""

    tag: str
    pid: int
    attempt: int
    started: float
    ended: float | None

    @property
    def lane(self) -> str:
        return self.tag.partition("/")[0]


def connect_results(path: str | Path) -> sqlite3.Connection:
    """A connection to the results database that waits up to 30 s for the
    write lock, since every worker thread of every process writes to it."""
    connection = sqlite3.connect(path, timeout=30, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")

    return connection


def create_results(path: str | Path) -> None:
    with closing(connect_results(path)) as connection:
        connection.executescript(RESULTS_SCHEMA)


def read_runs(path: str | Path) -> list[Run]:
    query = "SELECT job_tag, pid, attempt, started, ended FROM runs ORDER BY rowid"
    with closing(connect_results(path)) as connection:
        return [Run(*row) for row in connection.execute(query)]


def read_done(path: str | Path) -> list[str]:
    with closing(connect_results(path)) as connection:
        return [tag for (tag,) in connection.execute("SELECT job_tag FROM done")]


def record_run(tag: str, seconds: float, strict: bool) -> None:
    """Leave the side effects of one attempt, sleeping ``seconds`` between
    its start and its end so that attempts overlap when limits fail.

    With ``strict`` a second ``done`` row for the tag raises, and the job
    fails; otherwise it is ignored, for tests where a process may die after
    the side effect and before its outcome is stored.
    """
    path = current_app.config["RESULTS_DATABASE"]
    with closing(connect_results(path)) as results:
        run = results.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, NULL)",
            (tag, os.getpid(), current_job.attempt, time.time()),
        ).lastrowid
        time.sleep(seconds)

        verb = "INSERT" if strict else "INSERT OR IGNORE"
        results.execute("BEGIN IMMEDIATE")
        try:
            results.execute(f"{verb} INTO done VALUES (?)", (tag,))
            results.execute(
                "UPDATE runs SET ended = ? WHERE rowid = ?", (time.time(), run)
            )
        except BaseException:
            results.execute("ROLLBACK")
            raise
        results.execute("COMMIT")


@offload.task(name="many.record")
def record(tag: str, seconds: float = 0.0, strict: bool = True) -> None:
    record_run(tag, seconds, strict)


@offload.task(name="many.record_keyed", concurrency_key=lambda _tag, key, *_, **__: key)
def record_keyed(tag: str, key: str, seconds: float = 0.0, strict: bool = True) -> None:
    record_run(tag, seconds, strict)


def enqueue_one(lane: str, tag: str, number: int, seconds: float, strict: bool) -> str:
    """Enqueue one job of ``lane``. Keyed jobs alternate between the task's
    key function and a key given at enqueue, which share one limit."""
    if lane == "plain":
        job = record.enqueue(tag, seconds, strict)
    elif lane == SERIAL_QUEUE:
        job = record.using(queue=SERIAL_QUEUE).enqueue(tag, seconds, strict)
    elif lane.startswith("key-") and number % 2 == 0:
        job = record_keyed.enqueue(tag, lane, seconds, strict)
    elif lane.startswith("key-"):
        job = record.using(concurrency_key=lane).enqueue(tag, seconds, strict)
    else:
        raise ValueError(f"Unknown lane {lane!r}.")

    return job.id


def create_app() -> Flask:
    instance = os.environ["OFFLOAD_TEST_INSTANCE"]
    setting = os.environ.get
    app = Flask(__name__, instance_path=instance)
    app.config.update(
        OFFLOAD_LEASE_SECONDS=float(setting("OFFLOAD_TEST_LEASE", "30")),
        OFFLOAD_WORKER_THREADS=int(setting("OFFLOAD_TEST_THREADS", "2")),
        OFFLOAD_SHUTDOWN_GRACE=float(setting("OFFLOAD_TEST_GRACE", "2")),
        OFFLOAD_MAX_RECOVERIES=int(setting("OFFLOAD_TEST_MAX_RECOVERIES", "3")),
        OFFLOAD_QUEUES={SERIAL_QUEUE: {"concurrency": 1}},
        RESULTS_DATABASE=setting(
            "OFFLOAD_TEST_RESULTS", os.path.join(instance, RESULTS_FILE)
        ),
    )
    offload.init_app(app)

    @app.post("/enqueue")
    def enqueue() -> dict[str, Any]:
        """Enqueue ``count`` jobs of one lane in one request, so that a test
        can enqueue thousands without thousands of requests."""
        lane = request.args.get("lane", "plain")
        batch = request.args.get("batch", "0")
        count = int(request.args.get("count", "1"))
        seconds = float(request.args.get("seconds", "0"))
        strict = request.args.get("strict", "1") == "1"
        ids = [
            enqueue_one(lane, f"{lane}/{batch}/{number}", number, seconds, strict)
            for number in range(count)
        ]

        return {"pid": os.getpid(), "ids": ids}

    @app.get("/stats")
    def stats() -> dict[str, Any]:
        return {"pid": os.getpid(), "counts": offload.stats()}

    @app.get("/pid")
    def pid() -> dict[str, int]:
        return {"pid": os.getpid()}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bind", required=True, help="HOST:PORT to serve on")
    host, _, port = parser.parse_args().bind.rpartition(":")
    create_app().run(host=host, port=int(port), threaded=True)


if __name__ == "__main__":
    main()
