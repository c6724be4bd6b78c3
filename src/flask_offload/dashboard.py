"""The dashboard: server-rendered pages on an app's jobs, at
``OFFLOAD_DASHBOARD_URL`` (``/offload`` by default, ``None`` for none).

It reads and acts through the store only, so it shows every process's jobs
and needs no worker in the serving process. The pages are Jinja templates with
autoescaping on, because job arguments, results and errors are whatever the
app put there, HTML included. The overview refreshes its numbers from a small
JSON endpoint with a hand-written script that writes text only.

Access is closed unless the app decides: without
:meth:`Offload.authorize_dashboard` only a debug app's requests from this
machine, not relayed by a proxy, are answered. Every action is a POST that
carries a signed token, so another site cannot make a visitor's browser
retry, cancel or delete jobs.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from itsdangerous import BadSignature, URLSafeTimedSerializer

from .records import CANCELLED, FAILED, STATUSES, Status
from .stores import Throughput

if TYPE_CHECKING:
    from werkzeug.wrappers import Response as BaseResponse

    from .config import Settings
    from .extension import Offload
    from .job import Job

logger = logging.getLogger(__name__)

BLUEPRINT_NAME = "offload_dashboard"
PAGE_SIZE = 50
RECENT_FAILURES = 10
#: How many failed jobs "retry every failed job" reads at a time.
RETRY_BATCH = 500
#: The overview's throughput chart: one bar a minute, this many minutes.
THROUGHPUT_MINUTES = 30
#: The chart's drawing area, in SVG units: a bar and its gap per minute.
CHART_BAR = 10
CHART_HEIGHT = 60
TOKEN_SALT = "flask-offload-dashboard"
#: A page left open for a day still works; older tokens are refused.
TOKEN_MAX_AGE = 24 * 3600
#: Signs tokens when the app has no ``SECRET_KEY``. Tokens then hold in this
#: process only, so under several server processes set ``SECRET_KEY``.
_PROCESS_KEY = secrets.token_bytes(32)

CONTENT_POLICY = (
    "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
#: The messages an action may leave for the next page, by code, so the query
#: string never carries text that the page would show as is.
NOTICES = {
    "retried": "Enqueued {count} new job(s).",
    "cancelled": "The job is cancelled, or asked to stop if it was running.",
    "purged": "Deleted {count} finished job(s).",
    "not-retried": "Only a failed or cancelled job of a registered task can be "
    "retried.",
}


def make_blueprint(offload: Offload, settings: Settings) -> Blueprint:
    """The dashboard's routes for one app, registered by ``init_app`` at
    ``OFFLOAD_DASHBOARD_URL``."""
    blueprint = Blueprint(
        BLUEPRINT_NAME,
        __name__,
        template_folder="templates",
        static_folder="static",
        static_url_path="/static",
    )

    # Said once per app, at its first dashboard request without a key.
    warned_of_missing_key: list[bool] = []

    @blueprint.before_request
    def check_access() -> BaseResponse | None:
        # The script and style sheet hold no data, and the refusal page uses
        # them.
        if request.endpoint == f"{BLUEPRINT_NAME}.static":
            return None
        if lacks_secret_key() and not warned_of_missing_key:
            warned_of_missing_key.append(True)
            logger.warning(
                "The app has no SECRET_KEY, so the dashboard signs its forms "
                "with a key of this process only: under several server "
                "processes, retry, cancel and delete fail with 'token is "
                "missing, invalid or more than a day old' whenever another "
                "process serves the form. Set SECRET_KEY.",
                extra={"action": "dashboard_no_secret_key"},
            )
        if not may_open(offload):
            logger.debug("Dashboard refused to %s", request.remote_addr)
            page = render_template("offload/forbidden.html")
            return Response(page, status=403)
        g.offload_dashboard_open = True
        if request.method == "POST" and not valid_token(request.form.get("token")):
            message = (
                "This form's token is missing, invalid or more than a day old, "
                "so the action was not done. Reload the dashboard page and try "
                "again."
            )
            page = render_template("offload/error.html", message=message)
            return Response(page, status=400)

        return None

    @blueprint.after_request
    def harden(response: Response) -> Response:
        # The pages load only their own script and style, and refuse to be
        # framed, so a page elsewhere cannot trick a click onto "Delete".
        response.headers.setdefault("Content-Security-Policy", CONTENT_POLICY)
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")

        return response

    @blueprint.context_processor
    def template_globals() -> dict[str, Any]:
        return {
            "token": make_token(),
            # Said to those let in only: a stranger need not learn it.
            "no_secret_key": lacks_secret_key()
            and g.get("offload_dashboard_open", False),
            "statuses": STATUSES,
            "poll_seconds": settings.dashboard_poll_seconds,
            "as_json": as_json,
        }

    @blueprint.get("/")
    def overview() -> str:
        failures = offload.jobs(status=FAILED, limit=RECENT_FAILURES)
        counts = offload.stats()

        return render_template(
            "offload/overview.html",
            counts=counts,
            totals=totals(counts),
            running=offload.jobs(status="running", limit=PAGE_SIZE),
            failures=failures,
            chart=chart(offload.state().store.throughput(THROUGHPUT_MINUTES)),
            notice=notice(),
        )

    @blueprint.get("/stats.json")
    def stats() -> Response:
        counts = offload.stats()
        running = offload.jobs(status="running", limit=PAGE_SIZE)
        throughput = offload.state().store.throughput(THROUGHPUT_MINUTES)

        return jsonify(
            queues=counts,
            totals=totals(counts),
            running=[running_entry(job) for job in running],
            throughput=[
                {"start": b.start, "succeeded": b.succeeded, "failed": b.failed}
                for b in throughput
            ],
        )

    @blueprint.get("/jobs")
    def jobs() -> BaseResponse | str:
        wanted_id = request.args.get("id", "").strip()
        if wanted_id:
            if offload.get_job(wanted_id) is not None:
                return redirect(url_for(".job", job_id=wanted_id))
            missing: str | None = wanted_id
        else:
            missing = None

        status = request.args.get("status") or None
        if status is not None and status not in STATUSES:
            abort(400, f"Unknown status {status!r}; use one of {STATUSES}.")
        queue = request.args.get("queue") or None
        task = request.args.get("task") or None
        filters = {"queue": queue, "status": status, "task": task}
        page = list_page(
            offload,
            filters,
            before=request.args.get("before") or None,
            after=request.args.get("after") or None,
        )

        return render_template(
            "offload/jobs.html",
            jobs=page.jobs,
            older=page.older,
            newer=page.newer,
            filters=filters,
            page_args={key: value for key, value in filters.items() if value},
            queues=known_queues(offload, settings, queue),
            tasks=sorted(offload.tasks),
            missing=missing,
            notice=notice(),
        )

    @blueprint.get("/jobs/<job_id>")
    def job(job_id: str) -> BaseResponse | str:
        found = offload.get_job(job_id)
        if found is None:
            page = render_template(
                "offload/error.html",
                message=f"There is no job {job_id!r}; it may have been purged.",
            )
            return Response(page, status=404)

        return render_template(
            "offload/job.html",
            job=found,
            timings=timings(found),
            can_retry=can_retry(offload, found),
            notice=notice(),
        )

    @blueprint.post("/jobs/<job_id>/retry")
    def retry(job_id: str) -> BaseResponse:
        found = offload.get_job(job_id)
        if found is None:
            abort(404)
        if not can_retry(offload, found):
            return see_other(".job", job_id=job_id, notice="not-retried")

        new = retry_job(offload, found)

        return see_other(".job", job_id=new.id, notice="retried", count=1)

    @blueprint.post("/jobs/<job_id>/cancel")
    def cancel(job_id: str) -> BaseResponse:
        found = offload.get_job(job_id)
        if found is None:
            abort(404)
        found.cancel()
        logger.warning(
            "Job %s cancelled from the dashboard",
            found.id,
            extra={
                "action": "dashboard_cancel",
                "job_id": found.id,
                "task": found.task,
                "queue": found.queue,
            },
        )

        return see_other(".job", job_id=job_id, notice="cancelled")

    @blueprint.post("/retry-failed")
    def retry_failed() -> BaseResponse:
        task = request.form.get("task", "")
        if task not in offload.tasks:
            abort(400, f"Task {task!r} is not registered in this app.")

        # Collect first, page by page back in time, then enqueue.
        failed: list[Job] = []
        while True:
            before = failed[-1].id if failed else None
            batch = offload.jobs(
                status=FAILED, task=task, limit=RETRY_BATCH, before=before
            )
            failed.extend(batch)
            if len(batch) < RETRY_BATCH:
                break
        for old in failed:
            retry_job(offload, old)

        return see_other(
            ".jobs", task=task, status="queued", notice="retried", count=len(failed)
        )

    @blueprint.post("/purge")
    def purge() -> BaseResponse:
        task = request.form.get("task") or None
        store = offload.state().store
        tasks = None if task is None else [task]
        deleted = store.purge(finished_before=store.clock(), tasks=tasks)
        logger.warning(
            "Deleted %d finished job(s)%s from the dashboard",
            deleted,
            "" if task is None else f" of task {task}",
            extra={"action": "dashboard_purge", "task": task},
        )

        return see_other(".jobs", task=task, notice="purged", count=deleted)

    return blueprint


@dataclass(frozen=True, slots=True)
class ListPage:
    """One page of the job list, and the cursors of its neighbours: the id
    to list ``before`` for the older page, ``after`` for the newer one."""

    jobs: list[Job]
    older: str | None
    newer: str | None


def list_page(
    offload: Offload,
    filters: dict[str, Any],
    *,
    before: str | None,
    after: str | None,
) -> ListPage:
    """The page of jobs next to a cursor, newest first, read by id whatever
    its depth. One job more than a page tells whether the list goes on."""
    wanted = PAGE_SIZE + 1
    if after is not None:
        listed = offload.jobs(**filters, limit=wanted, after=after)
        if len(listed) == wanted:
            shown = listed[1:]
            return ListPage(shown, older=shown[-1].id, newer=shown[0].id)
        # Nothing newer than this page: show the newest, a full page.
        before = None

    listed = offload.jobs(**filters, limit=wanted, before=before)
    shown = listed[:PAGE_SIZE]
    older = shown[-1].id if len(listed) == wanted else None
    newer = shown[0].id if before is not None and shown else None
    if before is not None and not shown:
        # Past the oldest job: the way back is to the jobs newer than it.
        newer = before

    return ListPage(shown, older=older, newer=newer)


def known_queues(offload: Offload, settings: Settings, chosen: str | None) -> list[str]:
    """The queues the job list offers as filters: those of the registered
    tasks and of ``OFFLOAD_QUEUES``, and the one chosen. Not counted in the
    store, which would read every job's entry in an index; the overview
    links to every queue that has jobs."""
    names = {task.options.queue for task in offload.tasks.values()}
    names |= set(settings.queues)
    if chosen:
        names.add(chosen)

    return sorted(names)


def may_open(offload: Offload) -> bool:
    """Whether the current request may see the dashboard: the app's hook
    decides if it set one; otherwise only a debug app's own machine, asked
    directly, because a proxy in front makes every visitor look local."""
    if offload.dashboard_authorizer is not None:
        return bool(offload.dashboard_authorizer())
    if not current_app.debug:
        return False
    if "X-Forwarded-For" in request.headers or "Forwarded" in request.headers:
        return False

    return is_loopback(request.remote_addr)


def is_loopback(address: str | None) -> bool:
    if not address:
        return False
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def lacks_secret_key() -> bool:
    """Whether the dashboard's tokens hold in this process only, outside the
    development server, where that is expected."""
    return not current_app.secret_key and not current_app.debug


def serializer() -> URLSafeTimedSerializer:
    key = current_app.secret_key or _PROCESS_KEY

    return URLSafeTimedSerializer(key, salt=TOKEN_SALT)


def make_token() -> str:
    """A signed token for the forms: another site cannot read it from our
    pages, so it cannot forge a POST that carries it."""
    return serializer().dumps("dashboard")


def valid_token(token: str | None) -> bool:
    if not token:
        return False
    try:
        serializer().loads(token, max_age=TOKEN_MAX_AGE)
    except BadSignature:
        return False

    return True


def can_retry(offload: Offload, job: Job) -> bool:
    return job.status in (FAILED, CANCELLED) and job.task in offload.tasks


def retry_job(offload: Offload, job: Job) -> Job:
    """Enqueue a new job with the old one's task, arguments, queue and
    priority. The old job stays as it was, so its errors remain readable."""
    task = offload.tasks[job.task]
    new = task.using(queue=job.queue, priority=job.priority).enqueue(
        *job.args, **job.kwargs
    )
    logger.info(
        "Job %s retried from the dashboard as job %s",
        job.id,
        new.id,
        extra={
            "action": "dashboard_retry",
            "job_id": new.id,
            "task": job.task,
            "queue": job.queue,
        },
    )

    return new


def totals(counts: dict[str, dict[Status, int]]) -> dict[Status, int]:
    summed: dict[Status, int] = dict.fromkeys(STATUSES, 0)
    for by_status in counts.values():
        for status, count in by_status.items():
            summed[status] += count

    return summed


def chart(buckets: list[Throughput]) -> dict[str, Any]:
    """The throughput chart's bars: per minute, a succeeded bar with the
    failed one stacked on it, scaled to the busiest minute. The overview's
    script draws the same from ``stats.json``."""
    busiest = max((b.succeeded + b.failed for b in buckets), default=0)
    scale = (CHART_HEIGHT - 4) / max(busiest, 1)
    bars = []
    for number, bucket in enumerate(buckets):
        succeeded = _bar_height(bucket.succeeded, scale)
        failed = _bar_height(bucket.failed, scale)
        minute = time.strftime("%H:%M", time.gmtime(bucket.start))
        bars.append(
            {
                "x": number * CHART_BAR + 1,
                "succeeded": succeeded,
                "failed": failed,
                "succeeded_y": CHART_HEIGHT - succeeded,
                "failed_y": CHART_HEIGHT - succeeded - failed,
                "label": f"{minute} UTC: {bucket.succeeded} succeeded, "
                f"{bucket.failed} failed",
            }
        )
    last = buckets[-1] if buckets else Throughput(0, 0, 0)

    return {
        "width": CHART_BAR * len(buckets),
        "height": CHART_HEIGHT,
        "bar_width": CHART_BAR - 2,
        "bars": bars,
        "minutes": len(buckets),
        "busiest": busiest,
        "last": last,
    }


def _bar_height(count: int, scale: float) -> float:
    # A minute with any job shows at least a sliver.
    return 0.0 if count == 0 else max(1.0, round(count * scale, 2))


def running_entry(job: Job) -> dict[str, Any]:
    progress = job.progress

    return {
        "id": job.id,
        "url": url_for(".job", job_id=job.id),
        "task": job.task,
        "queue": job.queue,
        "done": None if progress is None else progress.done,
        "total": None if progress is None else progress.total,
        "fraction": None if progress is None else progress.fraction,
        "message": None if progress is None else progress.message,
    }


def timings(job: Job) -> dict[str, float | None]:
    """Seconds the job waited after it could start, and ran."""
    started, finished = job.started_at, job.finished_at
    waited = None if started is None else (started - job.run_at).total_seconds()
    ran = None
    if started is not None and finished is not None:
        ran = (finished - started).total_seconds()

    return {"waited": waited, "ran": ran}


def as_json(value: Any, indent: int | None = 2) -> str:
    """Arguments and results as readable JSON; what JSON cannot show is shown
    by its repr. The template escapes the text."""
    return json.dumps(value, indent=indent, default=repr, ensure_ascii=False)


def notice() -> str | None:
    template = NOTICES.get(request.args.get("notice", ""))
    if template is None:
        return None

    return template.format(count=request.args.get("count", 0, type=int))


def see_other(endpoint: str, **values: Any) -> BaseResponse:
    values = {key: value for key, value in values.items() if value is not None}

    return redirect(url_for(endpoint, **values), code=303)
