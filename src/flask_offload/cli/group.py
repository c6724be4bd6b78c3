"""The ``flask offload`` group and what its commands share."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

import click
from flask import current_app
from flask.cli import AppGroup

from ..extension import EXTENSION_KEY, OffloadState
from ..job import Job
from ..task import Task

logger = logging.getLogger(__name__)

offload_group = AppGroup(
    "offload",
    help="Run a Flask-Offload worker, look at the queue and act on its jobs.",
)


def _running_for(job: Job, now: float) -> str:
    started_at = job.started_at
    if started_at is None:
        return "-"

    started = started_at.timestamp()
    seconds = max(0, int(now - started))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"

    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _describe_progress(job: Job) -> str:
    progress = job.progress
    if progress is None:
        return "-"

    done = f"{progress.done:g}"
    amount = done if progress.total is None else f"{done}/{progress.total:g}"

    return amount if not progress.message else f"{amount} {progress.message}"


def _find_job(job_id: str) -> Job:
    job = _offload_state().offload.get_job(job_id)
    if job is None:
        raise click.ClickException(
            f"No job with id {job_id!r}. It may have been purged; list jobs "
            f"with 'flask offload jobs'."
        )

    return job


def _registered_task(name: str) -> Task[Any, Any]:
    tasks = _offload_state().offload.tasks
    task = tasks.get(name)
    if task is None:
        names = sorted(tasks)
        shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
        raise click.ClickException(
            f"No task named {name!r} is registered in this app. Registered "
            f"tasks: {shown or 'none'}. Check that --app names the app that "
            f"imports the module defining it."
        )

    return task


def _timestamp(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def _as_text(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _job_summary(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "task": job.task,
        "queue": job.queue,
        "priority": job.priority,
        "status": job.status,
        "attempts": job.attempts,
        "enqueued_at": _iso(job.enqueued_at),
    }


def _job_details(job: Job) -> dict[str, Any]:
    progress = _running_as_json(job)["progress"]

    return {
        **_job_summary(job),
        "args": job.args,
        "kwargs": job.kwargs,
        "result": job.result,
        "errors": [
            {"type": e.type, "message": e.message, "traceback": e.traceback}
            for e in job.errors
        ],
        "run_at": _iso(job.run_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "progress": progress,
        "worker": job.worker,
        "log": job.log,
    }


def _offload_state() -> OffloadState:
    app = current_app
    state = app.extensions.get(EXTENSION_KEY)
    if not isinstance(state, OffloadState):
        raise click.ClickException(
            f"Flask-Offload is not initialised for app {app.name!r}. Call "
            f"Offload(app), or offload.init_app(app) in the app factory, in "
            f"the app that --app or FLASK_APP names."
        )

    return state


def _describe_store(state: OffloadState) -> str:
    return state.store.describe()


def _aligned(rows: list[list[str]], numeric_from: int | None) -> list[str]:
    """Rows as lines of columns two spaces apart; columns from
    ``numeric_from`` on are right-aligned, as numbers read best."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = []
        for column, (cell, width) in enumerate(zip(row, widths, strict=True)):
            numeric = numeric_from is not None and column >= numeric_from
            cells.append(cell.rjust(width) if numeric else cell.ljust(width))
        lines.append("  ".join(cells).rstrip())

    return lines


def _running_as_json(job: Job) -> dict[str, Any]:
    progress = job.progress
    started_at = job.started_at

    return {
        "id": job.id,
        "task": job.task,
        "queue": job.queue,
        "worker": job.worker,
        "started_at": None if started_at is None else started_at.isoformat(),
        "progress": None
        if progress is None
        else {
            "done": progress.done,
            "total": progress.total,
            "message": progress.message,
        },
    }
