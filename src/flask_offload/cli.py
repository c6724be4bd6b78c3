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
import time
from collections.abc import Callable
from datetime import datetime
from types import FrameType
from typing import Any

import click
from flask import current_app
from flask.cli import AppGroup, ScriptInfo

from .extension import EXTENSION_KEY, OffloadState
from .job import Job
from .records import (
    CANCELLED,
    FAILED,
    FINISHED_STATUSES,
    RUNNING,
    STATUSES,
    WAITING_STATUSES,
    Status,
)
from .stores import store_from_url
from .stores.base import ListFilter, Store
from .task import Task
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
    help="Run a Flask-Offload worker, look at the queue and act on its jobs.",
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
@click.option(
    "--watch",
    is_flag=True,
    help="Redraw the table every --interval seconds until Ctrl-C.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="With --watch, the time between two draws.",
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    hidden=True,
    help="With --watch, stop after this many draws (for tests and scripts).",
)
def status_command(
    as_json: bool, limit: int, watch: bool, interval: float, count: int | None
) -> None:
    """Show how many jobs each queue has in each status, and the jobs running
    now with the worker that runs them.

    Counts come from the store, so they cover every process and machine that
    uses it. With --json the same is printed as one JSON object with the keys
    store, queues, totals and running. With --watch the table is redrawn
    every --interval seconds until Ctrl-C, which exits with status 0.
    """
    state = _offload_state()
    if not watch:
        _print_status(state, as_json, limit)
        return

    if as_json:
        raise click.UsageError(
            "--watch redraws a table and cannot be combined with --json; to "
            "poll the JSON, run 'flask offload status --json' from a loop."
        )

    draws = 0
    try:
        while count is None or draws < count:
            if draws:
                time.sleep(interval)
            click.clear()
            _print_status(state, as_json=False, limit=limit)
            draws += 1
    except KeyboardInterrupt:
        # Ctrl-C is how a watch is meant to end, not a failure.
        click.echo()


def _print_status(state: OffloadState, as_json: bool, limit: int) -> None:
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


@offload_group.command("jobs")
@click.option("--queue", metavar="NAME", help="Only jobs of this queue.")
@click.option(
    "--status",
    type=click.Choice(STATUSES),
    help="Only jobs in this status.",
)
@click.option("--task", metavar="NAME", help="Only jobs of this task.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Show at most this many jobs.",
)
@click.option(
    "--offset",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Skip this many of the newest jobs first.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array.")
def jobs_command(
    queue: str | None,
    status: Status | None,
    task: str | None,
    limit: int,
    offset: int,
    as_json: bool,
) -> None:
    """List jobs, newest first, with their id, task, queue, status, attempts
    and when they were enqueued (in UTC).

    Page through more with --offset; look at one job with 'flask offload
    show ID'.
    """
    state = _offload_state()
    jobs = state.offload.jobs(
        queue=queue, status=status, task=task, limit=limit, offset=offset
    )

    if as_json:
        click.echo(json.dumps([_job_summary(job) for job in jobs], indent=2))
        return

    if not jobs:
        click.echo("No jobs match." if offset == 0 else "No jobs past that offset.")
        return

    rows = [["id", "task", "queue", "status", "attempts", "enqueued"]]
    for job in jobs:
        rows.append(
            [
                job.id,
                job.task,
                job.queue,
                job.status,
                str(job.attempts),
                _timestamp(job.enqueued_at),
            ]
        )
    click.echo("\n".join(_aligned(rows, numeric_from=None)))


@offload_group.command("show")
@click.argument("job_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def show_command(job_id: str, as_json: bool) -> None:
    """Show one job: its arguments, result, the error of each failed attempt
    with its traceback, its timings, progress and worker."""
    job = _find_job(job_id)

    if as_json:
        click.echo(json.dumps(_job_details(job), indent=2, default=repr))
        return

    progress = _describe_progress(job)
    fields = [
        ("id", job.id),
        ("task", job.task),
        ("queue", job.queue),
        ("priority", str(job.priority)),
        ("status", job.status),
        ("attempts", str(job.attempts)),
        ("args", _as_text(job.args)),
        ("kwargs", _as_text(job.kwargs)),
        ("result", _as_text(job.result)),
        ("enqueued", _timestamp(job.enqueued_at)),
        ("run at", _timestamp(job.run_at)),
        ("started", _timestamp(job.started_at)),
        ("finished", _timestamp(job.finished_at)),
        ("progress", progress),
        ("worker", job.worker or "-"),
    ]
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        click.echo(f"{name.ljust(width)}  {value}")

    for number, error in enumerate(job.errors, start=1):
        click.echo()
        click.echo(f"Error of attempt {number}: {error.type}: {error.message}")
        click.echo(error.traceback.rstrip("\n"))


@offload_group.command("retry")
@click.argument("job_id", metavar="ID", required=False)
@click.option(
    "--failed-of",
    "failed_of",
    metavar="TASK",
    help="Retry every failed job of this task instead of one job.",
)
def retry_command(job_id: str | None, failed_of: str | None) -> None:
    """Enqueue a failed or cancelled job again, as a new job with the same
    task, arguments, queue and priority; or with --failed-of TASK, every
    failed job of that task. Prints the new job ids.

    The old jobs stay as they are, so their errors can still be read.
    """
    if (job_id is None) == (failed_of is None):
        raise click.UsageError(
            "Give a job ID, or --failed-of TASK to retry every failed job of a "
            "task, but not both."
        )

    if job_id is not None:
        job = _find_job(job_id)
        if job.status not in (FAILED, CANCELLED):
            raise click.ClickException(
                f"Job {job.id} is {job.status}; only failed or cancelled jobs "
                f"can be retried. Wait until it ends, or cancel it with 'flask "
                f"offload cancel {job.id}' first."
            )
        click.echo(_enqueue_again(job).id)
        return

    assert failed_of is not None
    _registered_task(failed_of)
    state = _offload_state()
    failed: list[Job] = []
    while page := state.offload.jobs(
        status=FAILED, task=failed_of, limit=RETRY_PAGE, offset=len(failed)
    ):
        failed.extend(page)

    if not failed:
        click.echo(f"No failed jobs of task {failed_of!r}; nothing was retried.")
        return

    for job in reversed(failed):
        click.echo(_enqueue_again(job).id)


RETRY_PAGE = 500


def _enqueue_again(job: Job) -> Job:
    task = _registered_task(job.task)

    return task.using(queue=job.queue, priority=job.priority).enqueue(
        *job.args, **job.kwargs
    )


@offload_group.command("cancel")
@click.argument("job_id", metavar="ID")
def cancel_command(job_id: str) -> None:
    """Cancel a job and print its status afterwards.

    A scheduled or queued job is cancelled at once and never runs. A running
    job is asked to stop; it ends as cancelled if its task checks
    current_job.cancel_requested. A finished job is left as it is.
    """
    job = _find_job(job_id)
    before = job.status
    status = job.cancel() or job.status

    if before in FINISHED_STATUSES:
        click.echo(f"Job {job.id} had already ended as {before}; it is unchanged.")
    elif status == RUNNING:
        click.echo(
            f"Job {job.id} is running: it was asked to stop, and is cancelled "
            f"if its task checks current_job.cancel_requested."
        )
    else:
        click.echo(f"Job {job.id} is now {status}.")


@offload_group.command("purge")
@click.option(
    "--older-than",
    "older_than",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Delete finished jobs that ended more than this long ago. "
    "[default: each task's keep_finished, or OFFLOAD_KEEP_FINISHED]",
)
def purge_command(older_than: float | None) -> None:
    """Delete finished jobs (succeeded, failed or cancelled) and their
    results, and print how many were deleted. Waiting and running jobs are
    never deleted. Workers do this by themselves now and then."""
    state = _offload_state()
    if older_than is None:
        deleted = state.purge_finished()
    else:
        deleted = state.store.purge(state.store.clock() - older_than)

    click.echo(f"Deleted {deleted} finished job(s).")


def _json_argument(kind: type[Any], accepted: str) -> Callable[..., Any]:
    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        if value is None:
            return kind()

        try:
            parsed = json.loads(value)
        except ValueError as error:
            raise click.BadParameter(
                f"{value!r} is not valid JSON ({error}); give {accepted}.",
                param=param,
            ) from error
        if not isinstance(parsed, kind):
            raise click.BadParameter(
                f"{value!r} is not accepted; give {accepted}.", param=param
            )

        return parsed

    return parse


@offload_group.command("enqueue")
@click.argument("task_name", metavar="TASK")
@click.argument(
    "args",
    metavar="[ARGS_JSON]",
    required=False,
    callback=_json_argument(list, "a JSON array of arguments, such as '[42, \"a\"]'"),
)
@click.option(
    "--kwargs",
    metavar="JSON",
    callback=_json_argument(dict, "a JSON object, such as '{\"user_id\": 42}'"),
    help="Keyword arguments, as a JSON object.",
)
@click.option("--queue", metavar="NAME", help="[default: the task's queue]")
@click.option("--priority", type=int, help="[default: the task's priority]")
@click.option(
    "--delay",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Run no sooner than this many seconds from now.",
)
def enqueue_command(
    task_name: str,
    args: list[Any],
    kwargs: dict[str, Any],
    queue: str | None,
    priority: int | None,
    delay: float | None,
) -> None:
    """Enqueue a job of TASK and print its id.

    ARGS_JSON is a JSON array of positional arguments, such as '[42]'; give
    keyword arguments with --kwargs '{"user_id": 42}'.
    """
    task = _registered_task(task_name)
    options: dict[str, Any] = {"queue": queue, "priority": priority, "delay": delay}
    options = {name: value for name, value in options.items() if value is not None}

    try:
        job = task.using(**options).enqueue(*args, **kwargs)
    except (TypeError, ValueError) as error:
        raise click.ClickException(
            f"Job of task {task_name!r} was not enqueued: {error}"
        ) from error

    click.echo(job.id)


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
