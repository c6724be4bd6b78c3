"""``flask offload status`` and ``flask offload move``."""

from __future__ import annotations

import json
import logging
import time

import click

from ..extension import OffloadState
from ..job import Job
from ..records import (
    FINISHED_STATUSES,
    RUNNING,
    STATUSES,
    WAITING_STATUSES,
    Status,
)
from ..stores import store_from_url
from ..stores.base import ListFilter, Store
from .group import (
    _aligned,
    _describe_progress,
    _describe_store,
    _offload_state,
    _running_as_json,
    _running_for,
    offload_group,
)

logger = logging.getLogger(__name__)


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
