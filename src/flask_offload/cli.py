"""The ``flask offload`` commands: a worker process of its own, and a look at
the queue.

Flask finds the group through the ``flask.commands`` entry point, so every app
that installs Flask-Offload gets ``flask offload ...`` without registering
anything. Each command loads the app named by ``--app`` (or ``FLASK_APP``)
and reads and acts through the app's store only, like the dashboard.

``flask offload worker`` is the one place the library sets up logging output:
it is a program of its own, and a worker that prints nothing cannot be
watched. Everywhere else the app's logging configuration is left alone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import click
from flask import current_app
from flask.cli import AppGroup, ScriptInfo

from .extension import EXTENSION_KEY, OffloadState
from .job import Job
from .records import (
    FINISHED_STATUSES,
    RUNNING,
    STATUSES,
    WAITING_STATUSES,
    Status,
)
from .stores import store_from_url
from .stores.base import ListFilter, Store
from .worker import Worker

logger = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s [%(threadName)s] %(name)s: %(message)s"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: How often the waiting command checks that the worker's threads are alive.
HEALTH_CHECK_INTERVAL = 1.0
#: The exit status after a second Ctrl-C, as a shell reports a process that
#: SIGINT ended (128 + 2).
FORCED_EXIT_STATUS = 128 + signal.SIGINT

offload_group = AppGroup(
    "offload",
    help="Run a Flask-Offload worker, or look at the queue.",
)


def _check_threads(
    ctx: click.Context, param: click.Parameter, value: int | None
) -> int | None:
    if value is not None and value < 1:
        raise click.BadParameter(
            f"{value!r} is not accepted; give 1 or more threads. To run no "
            f"worker, do not start this command.",
            param=param,
        )

    return value


def _parse_queues(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> list[str] | None:
    if value is None:
        return None

    names = [name.strip() for name in value.split(",")]
    if not all(names):
        raise click.BadParameter(
            f"{value!r} is not accepted; give one or more queue names separated "
            f"by commas, such as 'default,reports', or leave the option out to "
            f"serve every queue.",
            param=param,
        )

    return list(dict.fromkeys(names))


@offload_group.command("worker")
@click.option(
    "--threads",
    type=int,
    callback=_check_threads,
    metavar="N",
    help="Jobs run at once. [default: OFFLOAD_WORKER_THREADS, or 1 if that is 0]",
)
@click.option(
    "--queues",
    callback=_parse_queues,
    metavar="NAME,NAME",
    help="Serve only these queues, separated by commas. [default: every queue]",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="On SIGTERM or Ctrl-C, how long running jobs get to finish before "
    "they are handed back to the queue. [default: OFFLOAD_SHUTDOWN_GRACE]",
)
@click.option(
    "--processes",
    is_flag=True,
    help="Run each job in a child process (one per thread), which is killed "
    "when the job runs past its timeout, even inside a blocking C call.",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    help="Level of the log output. [default: INFO] If the app configured "
    "logging itself, only Flask-Offload's loggers are set to this level.",
)
def worker_command(
    threads: int | None,
    queues: list[str] | None,
    grace: float | None,
    processes: bool,
    log_level: str | None,
) -> None:
    """Run a worker in the foreground until SIGTERM or Ctrl-C.

    Use it where web processes set OFFLOAD_WORKER_THREADS = 0, so that jobs
    run in a process of their own, on this machine or any other that reaches
    the store. On SIGTERM or Ctrl-C the worker stops taking jobs, gives
    running jobs the grace period to finish and hands the rest back to the
    queue, then exits with status 0. Ctrl-C during that grace period exits at
    once; the jobs it interrupts run again when their lease expires.
    """
    state = _offload_state()
    _set_up_logging(log_level)
    if state.settings.url.startswith("memory://"):
        logger.warning(
            "OFFLOAD_URL is %r: jobs in memory are not shared between "
            "processes, so this worker only sees jobs enqueued by its own tasks",
            state.settings.url,
        )

    if threads is None:
        threads = state.settings.worker_threads or 1
    if grace is None:
        grace = state.settings.shutdown_grace
    script = click.get_current_context().find_object(ScriptInfo)
    worker = state.offload.make_worker(
        state.app,
        threads=threads,
        queues=queues,
        job_processes=processes,
        app_import_path=None if script is None else script.app_import_path,
    )

    shutdown = _Shutdown()
    shutdown.install()
    try:
        _run_until_signalled(worker, shutdown, _describe_store(state), grace)
    finally:
        shutdown.restore()


def _run_until_signalled(
    worker: Worker, shutdown: _Shutdown, store: str, grace: float
) -> None:
    worker.start()
    served = "all" if worker.queues is None else ", ".join(worker.queues)
    click.echo(
        f"Flask-Offload worker {worker.name}: {worker.threads} thread(s), "
        f"queues: {served}, store: {store}"
    )

    signum = shutdown.wait(lambda: worker.is_running)
    if signum is None:
        worker.stop(0)
        raise click.ClickException(
            "Every worker thread died; the log above says why. Jobs this "
            "worker held were handed back to the queue."
        )

    logger.info(
        "Received %s: no new jobs are taken; running jobs get %s s to finish "
        "(Ctrl-C exits at once)",
        signal.Signals(signum).name,
        grace,
        extra={"action": "worker_stopping", "worker": worker.name},
    )
    worker.stop(grace)


class _Shutdown:
    """Turns SIGTERM and SIGINT into a graceful stop of the worker command.

    The handler only puts the signal on a :class:`queue.SimpleQueue`, whose
    ``put`` is safe to call from a signal handler; taking a lock there (as
    ``threading.Event.set`` does) could deadlock on a lock the interrupted
    main thread holds. Handling is left to the main thread.
    """

    def __init__(self) -> None:
        self._received: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._first: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def wait(self, still_running: Callable[[], bool]) -> int | None:
        """Block until a stop signal arrives and return it, or return
        ``None`` once ``still_running()`` is false."""
        while still_running():
            try:
                return self._received.get(timeout=HEALTH_CHECK_INTERVAL)
            except queue.Empty:
                continue

        return None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._first is None:
            self._first = signum
            self._received.put(signum)
        elif signum == signal.SIGINT:
            _exit_at_once()
        # A repeated SIGTERM changes nothing: supervisors send it once and
        # follow with SIGKILL when they stop waiting.


def _exit_at_once() -> None:
    """Leave without waiting for running jobs, from a signal handler.

    ``os._exit`` skips interpreter shutdown, which could otherwise wait on
    threads a task started. The message goes straight to the file
    descriptor because the interrupted code may hold the stream's lock.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, RuntimeError, ValueError):
            stream.flush()
    message = (
        "Ctrl-C while stopping: exiting now. Jobs still running here run again "
        "when their lease expires.\n"
    )
    os.write(2, message.encode())
    os._exit(FORCED_EXIT_STATUS)


@offload_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Show at most this many running jobs.",
)
def status_command(as_json: bool, limit: int) -> None:
    """Show how many jobs each queue has in each status, and the jobs running
    now with the worker that runs them.

    Counts come from the store, so they cover every process and machine that
    uses it. With --json the same is printed as one JSON object with the keys
    store, queues, totals and running.
    """
    state = _offload_state()
    counts = dict(sorted(state.offload.stats().items()))
    totals: dict[Status, int] = {
        status: sum(by_status[status] for by_status in counts.values())
        for status in STATUSES
    }
    running = state.offload.jobs(status=RUNNING, limit=limit) if limit else []
    store = _describe_store(state)

    if as_json:
        report = {
            "store": store,
            "queues": counts,
            "totals": totals,
            "running": [_running_as_json(job) for job in running],
        }
        click.echo(json.dumps(report, indent=2))
        return

    click.echo(f"Store: {store}")
    click.echo()
    click.echo("\n".join(_counts_table(counts, totals)))
    click.echo()
    now = state.store.clock()
    click.echo("\n".join(_running_table(running, totals[RUNNING], now)))


def _counts_table(
    counts: dict[str, dict[Status, int]], totals: dict[Status, int]
) -> list[str]:
    if not counts:
        return ["No jobs in the store."]

    rows = [["queue", *STATUSES]]
    for queue_name, by_status in counts.items():
        rows.append([queue_name, *(str(by_status[status]) for status in STATUSES)])
    rows.append(["total", *(str(totals[status]) for status in STATUSES)])

    return _aligned(rows, numeric_from=1)


def _running_table(running: list[Job], total: int, now: float) -> list[str]:
    if total == 0:
        return ["No jobs are running."]

    shown = f"{len(running)} of {total}" if len(running) < total else str(total)
    lines = [f"Running jobs ({shown}):"]
    if not running:
        return lines

    rows = [["id", "task", "queue", "worker", "for", "progress"]]
    for job in running:
        rows.append(
            [
                job.id,
                job.task,
                job.queue,
                job.worker or "-",
                _running_for(job, now),
                _describe_progress(job),
            ]
        )

    return lines + _aligned(rows, numeric_from=None)


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


@offload_group.command("move")
@click.option(
    "--to",
    "destination",
    required=True,
    metavar="URL",
    help="The store to move to, such as postgresql://... or redis://...",
)
@click.option(
    "--finished",
    is_flag=True,
    help="Copy finished jobs (with their results) too.",
)
def move_command(destination: str, finished: bool) -> None:
    """Move every scheduled and queued job to another store.

    Each waiting job is copied to the store at --to and then cancelled
    here, so that it runs once, there. With --finished, finished jobs are
    copied as well. Stop every worker on this store first (set
    OFFLOAD_WORKER_THREADS = 0 and stop 'flask offload worker'): the command
    refuses while jobs are running here. Then point OFFLOAD_URL at the new
    store.
    """
    state = _offload_state()
    source = state.store
    running = sum(counts[RUNNING] for counts in source.counts().values())
    if running:
        raise click.ClickException(
            f"{running} job(s) are running on {source.describe()}. Stop every "
            f"worker on it first (OFFLOAD_WORKER_THREADS = 0, and stop 'flask "
            f"offload worker'), let running jobs end, then move."
        )

    target = store_from_url(destination)
    target.queue_limits = dict(state.settings.queues)
    target.open()
    try:
        moved = _move_waiting(source, target)
        copied = _copy_finished(source, target) if finished else 0
    finally:
        target.close()

    click.echo(
        f"Moved {moved} waiting job(s) from {source.describe()} to "
        f"{target.describe()}"
        + (f", and copied {copied} finished job(s)." if finished else ".")
        + " Now set OFFLOAD_URL to the new store."
    )


MOVE_PAGE = 500


def _move_waiting(source: Store, target: Store) -> int:
    """Copy each scheduled or queued job, then cancel it here; page by page
    from the start, since moved jobs leave the waiting statuses."""
    moved = 0
    for status in WAITING_STATUSES:
        while page := source.list_jobs(ListFilter(status=status, limit=MOVE_PAGE)):
            for record in page:
                target.enqueue(record)
                source.cancel(record.id)
                moved += 1

    return moved


def _copy_finished(source: Store, target: Store) -> int:
    copied = 0
    for status in FINISHED_STATUSES:
        offset = 0
        while page := source.list_jobs(
            ListFilter(status=status, limit=MOVE_PAGE, offset=offset)
        ):
            for record in page:
                target.enqueue(record)
                copied += 1
            offset += len(page)

    return copied


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


def _set_up_logging(level: str | None) -> None:
    """Send log records to stderr, unless the app configured logging itself:
    then leave its handlers alone and only apply ``--log-level``, if given, to
    Flask-Offload's loggers."""
    root = logging.getLogger()
    if root.handlers:
        if level is not None:
            logging.getLogger("flask_offload").setLevel(level.upper())
        return

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel((level or "INFO").upper())
