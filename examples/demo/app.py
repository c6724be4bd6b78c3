"""The Flask-Offload demo: enqueue pretend work and watch the queue burn down.

Run it from the repository root::

    flask --app examples/demo/app.py run

Flask finds :func:`create_app` and calls it. Jobs are kept in SQLite in the
instance folder (``examples/demo/instance/``), so queued jobs survive a
restart, and a worker thread in the same process runs them: nothing else has
to be running. ``FLASK_DEMO_JOB_SECONDS=1`` makes each job take one second;
``FLASK_OFFLOAD_WORKER_THREADS=3`` runs three jobs at a time.

There is deliberately no module-level ``app``: importing this module must not
start a worker, so the tests can build their own apps from the factory.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue

from flask_offload import Job, Offload, current_job
from flask_offload.records import Status

#: How many jobs one click may enqueue at most.
MAX_COUNT = 50
#: How many jobs the page lists.
RECENT_JOBS = 20
#: Each job reports its progress this many times.
STEPS = 10
UNFINISHED: tuple[Status, ...] = ("scheduled", "queued", "running")

offload = Offload()
demo = Blueprint("demo", __name__)


def create_app(
    config: Mapping[str, Any] | None = None, *, instance_path: str | None = None
) -> Flask:
    """Build the demo app. ``config`` overrides the defaults and any
    ``FLASK_*`` environment variables; ``instance_path`` (absolute) is where
    the SQLite queue lives, ``examples/demo/instance/`` by default.

    :raises ValueError: if ``DEMO_JOB_SECONDS`` is not a number of seconds.
    """
    app = Flask(__name__, instance_path=instance_path)
    app.config["DEMO_JOB_SECONDS"] = 3.0
    app.config.from_prefixed_env()
    if config is not None:
        app.config.from_mapping(config)

    seconds = app.config["DEMO_JOB_SECONDS"]
    number = isinstance(seconds, (int, float)) and not isinstance(seconds, bool)
    if not number or not math.isfinite(seconds) or seconds < 0:
        raise ValueError(
            f"DEMO_JOB_SECONDS must be a number of seconds, 0 or more, not {seconds!r}."
        )

    app.register_blueprint(demo)
    offload.init_app(app)

    return app


@offload.task(name="demo.pretend_to_work")
def pretend_to_work(seconds: float) -> None:
    """Stand-in for slow work: sleep ``seconds`` in steps, reporting each."""
    # Kept in the job's log, shown on its dashboard page; in debug mode, where
    # the app's logger lets INFO through.
    current_app.logger.info("Working for %g s in %d steps", seconds, STEPS)
    for step in range(1, STEPS + 1):
        time.sleep(seconds / STEPS)
        current_job.set_progress(step, STEPS, f"step {step} of {STEPS}")


@demo.get("/")
def index() -> str:
    return render_template("index.html", **queue_state())


@demo.get("/status")
def status() -> dict[str, Any]:
    return queue_state()


@demo.post("/enqueue")
def enqueue() -> ResponseReturnValue:
    """Enqueue ``count`` jobs, from a form (answered with a redirect to the
    page) or from a JSON object (answered with the new state)."""
    if request.is_json:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return refuse('The body must be a JSON object such as {"count": 5}.')
        value = body.get("count", 1)
    else:
        value = request.form.get("count", "1")

    count = parse_count(value)
    if count is None:
        return refuse(
            f"count must be a whole number from 1 to {MAX_COUNT}, not {value!r}."
        )

    seconds = current_app.config["DEMO_JOB_SECONDS"]
    jobs = [pretend_to_work.enqueue(seconds) for _ in range(count)]
    if not request.is_json:
        return redirect(url_for(".index"), code=303)

    return {"enqueued": [job.id for job in jobs], **queue_state()}, 202


def parse_count(value: object) -> int | None:
    """The number of jobs asked for, or ``None`` if it is not accepted."""
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int):
        return None

    return value if 1 <= value <= MAX_COUNT else None


def refuse(message: str) -> ResponseReturnValue:
    if request.is_json:
        return {"error": message}, 400

    abort(400, description=message)


def queue_state() -> dict[str, Any]:
    """What the page shows; the template and ``/status`` both use it, so a
    refresh and a poll always agree."""
    counts = offload.stats().values()
    running = sum(by_status["running"] for by_status in counts)
    unfinished = sum(by_status[status] for by_status in counts for status in UNFINISHED)

    return {
        "queue_size": unfinished,
        "running": running,
        "jobs": [describe(job) for job in offload.jobs(limit=RECENT_JOBS)],
    }


def describe(job: Job) -> dict[str, Any]:
    """One job as the page lists it. ``percent`` is ``None`` while a running
    job has not reported progress yet."""
    progress = job.progress
    percent: int | None
    if progress is not None and progress.fraction is not None:
        percent = round(progress.fraction * 100)
    elif job.status == "running":
        percent = None
    else:
        percent = 100 if job.status == "succeeded" else 0

    return {
        "id": job.id,
        "task": job.task,
        "status": job.status,
        "percent": percent,
        "detail": detail(job),
        "enqueued_at": job.enqueued_at.isoformat(),
    }


def detail(job: Job) -> str:
    """A few words on where the job stands."""
    if job.status in ("scheduled", "queued"):
        return "waiting for the worker"
    if job.status == "running":
        progress = job.progress
        if progress is None or progress.message is None:
            return "starting"
        return progress.message
    if job.status == "failed":
        error = job.error
        return "failed" if error is None else error.message
    if job.started_at is not None and job.finished_at is not None:
        took = (job.finished_at - job.started_at).total_seconds()
        return f"took {took:.1f} s"

    return ""
