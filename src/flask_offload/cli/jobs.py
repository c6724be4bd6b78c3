"""``flask offload jobs``, ``show``, ``retry``, ``cancel``, ``purge`` and
``enqueue``: act on single jobs."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import click

from ..job import Job
from ..records import (
    CANCELLED,
    FAILED,
    FINISHED_STATUSES,
    RUNNING,
    STATUSES,
    Status,
)
from .group import (
    _aligned,
    _as_text,
    _describe_progress,
    _find_job,
    _job_details,
    _job_summary,
    _offload_state,
    _registered_task,
    _timestamp,
    offload_group,
)

logger = logging.getLogger(__name__)


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
    "--before",
    metavar="ID",
    help="Only jobs older than this one: give the last id of a list to see "
    "the next page.",
)
@click.option(
    "--after",
    metavar="ID",
    help="Only jobs newer than this one, the closest first: give the first "
    "id of a list to see the page before it.",
)
@click.option(
    "--offset",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Skip this many of the newest jobs first (slower the deeper it "
    "goes; --before is not).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array.")
def jobs_command(
    queue: str | None,
    status: Status | None,
    task: str | None,
    limit: int,
    before: str | None,
    after: str | None,
    offset: int,
    as_json: bool,
) -> None:
    """List jobs, newest first, with their id, task, queue, status, attempts
    and when they were enqueued (in UTC).

    Page through more with --before the last id shown; look at one job with
    'flask offload show ID'.
    """
    state = _offload_state()
    jobs = state.offload.jobs(
        queue=queue,
        status=status,
        task=task,
        limit=limit,
        offset=offset,
        before=before,
        after=after,
    )

    if as_json:
        click.echo(json.dumps([_job_summary(job) for job in jobs], indent=2))
        return

    if not jobs:
        paged = offset or before or after
        click.echo("No jobs past that point." if paged else "No jobs match.")
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
    if len(jobs) == limit:
        click.echo(f"More: --before {jobs[-1].id}", err=True)


@offload_group.command("show")
@click.argument("job_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def show_command(job_id: str, as_json: bool) -> None:
    """Show one job: its arguments, result, the error of each failed attempt
    with its traceback, its timings, progress and worker, and what its task
    logged."""
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

    if job.log:
        click.echo()
        click.echo("Log:")
        click.echo(job.log)


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
        status=FAILED,
        task=failed_of,
        limit=RETRY_PAGE,
        before=failed[-1].id if failed else None,
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
