"""An app for the tests that start real processes.

Settings come from the environment, so each test process can be told where
the shared instance folder is and how long leases last. Tasks leave their
side effects as lines appended to ``events.log`` in the instance folder, so
the test sees which process ran what, and how often.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import click
from flask import Flask, request

from flask_offload import Offload, current_job

offload = Offload()


def events_file() -> Path:
    return Path(os.environ["OFFLOAD_TEST_INSTANCE"]) / "events.log"


def record_event(*words: object) -> None:
    line = " ".join(str(word) for word in words) + "\n"
    with open(events_file(), "a") as events:
        events.write(line)


@offload.task(name="record")
def record(tag: str) -> None:
    record_event("done", tag, os.getpid(), current_job.attempt)
    # INFO: kept when the worker, or the app, lets INFO records be made.
    logging.getLogger("tests.apps.jobs").info("recorded %s in %d", tag, os.getpid())


@offload.task(name="sleep_then_record")
def sleep_then_record(tag: str, seconds: float) -> None:
    record_event("start", tag, os.getpid(), current_job.attempt)
    time.sleep(seconds)
    record_event("done", tag, os.getpid(), current_job.attempt)


@offload.task(name="stuck", timeout=1)
def stuck() -> None:
    """Blocks in one C call, which no thread timeout can interrupt."""
    record_event("start", "stuck", os.getpid(), current_job.attempt)
    time.sleep(60)


if os.environ.get("OFFLOAD_TEST_TICKS"):

    @offload.periodic(every=1, name="tick")
    def tick() -> None:
        record_event("tick", os.getpid(), time.time())


def create_app() -> Flask:
    app = Flask(__name__, instance_path=os.environ["OFFLOAD_TEST_INSTANCE"])
    app.config["OFFLOAD_LEASE_SECONDS"] = float(
        os.environ.get("OFFLOAD_TEST_LEASE", "30")
    )
    app.config["OFFLOAD_WORKER_THREADS"] = int(
        os.environ.get("OFFLOAD_TEST_THREADS", "1")
    )
    if os.environ.get("OFFLOAD_TEST_URL"):
        app.config["OFFLOAD_URL"] = os.environ["OFFLOAD_TEST_URL"]
    app.config["OFFLOAD_SHUTDOWN_GRACE"] = float(
        os.environ.get("OFFLOAD_TEST_GRACE", "2")
    )
    offload.init_app(app)

    @app.post("/enqueue")
    def enqueue() -> dict[str, list[str]]:
        count = int(request.args.get("count", "1"))
        seconds = float(request.args.get("seconds", "0"))
        prefix = request.args.get("tag", "job")
        ids = []
        for number in range(count):
            tag = f"{prefix}-{number}"
            if seconds:
                job = sleep_then_record.enqueue(tag, seconds)
            else:
                job = record.enqueue(tag)
            ids.append(job.id)
        return {"ids": ids}

    @app.get("/stats")
    def stats() -> dict[str, Any]:
        return dict(offload.stats())

    @app.get("/pid")
    def pid() -> dict[str, int]:
        return {"pid": os.getpid()}

    @app.cli.command("enqueue-some")
    @click.argument("count", type=int)
    def enqueue_some(count: int) -> None:
        """Enqueue COUNT jobs and exit, as a cron script would."""
        for number in range(count):
            record.enqueue(f"cli-{number}")

    @app.cli.command("enqueue-slow")
    @click.argument("seconds", type=float)
    @click.option("--tag", default="slow")
    def enqueue_slow(seconds: float, tag: str) -> None:
        """Enqueue one job that sleeps SECONDS, and print its id."""
        click.echo(sleep_then_record.enqueue(tag, seconds).id)

    @app.cli.command("enqueue-unique")
    @click.argument("count", type=int)
    def enqueue_unique(count: int) -> None:
        """Enqueue COUNT jobs that share one unique key; print their ids."""
        for _ in range(count):
            click.echo(record.using(unique_key="only-one").enqueue("unique").id)

    @app.cli.command("enqueue-stuck")
    def enqueue_stuck() -> None:
        """Enqueue one job that blocks past its timeout, and print its id."""
        click.echo(stuck.enqueue().id)

    return app
