"""``Offload``: the Flask extension that ties tasks, a store and a worker to
an app."""

from __future__ import annotations

import atexit
import logging
import math
import os
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any, ParamSpec, TypeVar

from flask import Flask, current_app, has_app_context
from sqlalchemy import Engine

from .config import Settings, load_settings
from .errors import ConfigurationError
from .job import Job
from .lifecycle import (
    StartMode,
    call_after_fork,
    check_threads_can_run,
    exit_gracefully_on_sigterm,
    is_dev_server,
    start_mode,
)
from .processes import ProcessRunner
from .records import DEFAULT_QUEUE, Status
from .schedules import Schedule
from .schedules import seconds as schedule_seconds
from .stores import store_from_url
from .stores.base import ListFilter, Store
from .stores.sql import SQLStore
from .task import ConcurrencyKey, EnqueueOptions, RetryPolicy, Task
from .worker import Worker, default_worker_name

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
EXTENSION_KEY = "offload"


class OffloadState:
    """What :class:`Offload` keeps for one app: its settings, its store and
    the worker that runs in this process, if any."""

    def __init__(
        self,
        offload: Offload,
        app: Flask,
        settings: Settings,
        engine: Engine | None = None,
    ) -> None:
        self.offload = offload
        self.app = app
        self.settings = settings
        self.store = _make_store(settings, engine)
        self.worker: Worker | None = None
        self.eager = settings.eager
        self._inline_worker: Worker | None = None
        #: Each schedule's next run time as this process last knew it.
        self._next_runs: dict[str, float] = {}
        self.start_mode = StartMode.NEVER
        self.closed = False
        self._forked_into: int | None = None
        self._lock = threading.Lock()

    def start_worker(self, threads: int | None = None) -> Worker:
        """Start the in-process worker unless it runs already."""
        with self._lock:
            if self.worker is not None:
                return self.worker

            if threads is None:
                threads = self.settings.worker_threads or 1
            self.worker = self.offload.make_worker(self.app, threads=threads)
            self.worker.start()

            return self.worker

    def purge_finished(self) -> int:
        """Delete finished jobs older than their task's ``keep_finished``, or
        ``OFFLOAD_KEEP_FINISHED``. Every worker calls this now and then."""
        now = self.store.clock()
        by_keep: dict[float, list[str]] = {}
        for name, task in self.offload.tasks.items():
            if task.keep_finished is not None:
                by_keep.setdefault(task.keep_finished, []).append(name)
        custom = [name for names in by_keep.values() for name in names]

        deleted = 0
        default = self.settings.keep_finished
        if math.isfinite(default):
            deleted += self.store.purge(now - default, other_than=custom)
        for keep, names in by_keep.items():
            if math.isfinite(keep):
                deleted += self.store.purge(now - keep, tasks=names)

        return deleted

    def fire_due_schedules(self) -> int:
        """Enqueue the periodic tasks that are due, once across every
        process: the store's atomic :meth:`Store.fire_schedule` lets one
        process win each tick. Returns how many this process enqueued."""
        now = self.store.clock()
        fired = 0
        for name, schedule in self.offload.schedules.items():
            known = self._next_runs.get(name)
            if known is None:
                known = self.store.sync_schedule(
                    name, schedule.spec, schedule.next_after(now)
                )
            if known > now:
                self._next_runs[name] = known
                continue

            task = self.offload.tasks[schedule.task]
            job = task.tick_record(now)
            next_run = schedule.next_after(now)
            if self.store.fire_schedule(name, known, next_run, job):
                fired += 1
                self._next_runs[name] = next_run
                logger.info(
                    "Periodic task %s is due; enqueued job %s",
                    name,
                    job.id,
                    extra={"action": "scheduled_tick", "job_id": job.id},
                )
            else:
                # Another process fired it: read where it moved the schedule.
                self._next_runs.pop(name, None)

        return fired

    def inline_worker(self) -> Worker:
        """A worker with no threads of its own, that runs jobs in the thread
        that asks: for ``OFFLOAD_EAGER`` and :meth:`Offload.drain`."""
        if self._inline_worker is None:
            self._inline_worker = self.offload.make_worker(self.app, threads=1)

        return self._inline_worker

    def stop_worker(self, grace: float | None = None) -> None:
        with self._lock:
            worker, self.worker = self.worker, None
        if worker is not None:
            if grace is None:
                grace = self.settings.shutdown_grace
            worker.stop(grace)

    def close(self) -> None:
        self.stop_worker()
        self.store.close()
        self.closed = True
        atexit.unregister(self.stop_worker)

    def after_fork_in_child(self) -> None:
        """Threads do not survive a fork: drop the parent's worker and
        connections, and start a worker here if this is a server's child."""
        if self.closed or self._forked_into == os.getpid():
            return

        self._forked_into = os.getpid()
        self._lock = threading.Lock()
        self.store.after_fork()
        self.worker = None
        self._inline_worker = None
        if self.start_mode is StartMode.IN_FORKED_CHILDREN:
            self.start_mode = StartMode.NOW
            self.start_worker()


class Offload:
    """Background jobs for a Flask app.

    ``Offload(app)``, or ``offload = Offload()`` and later
    ``offload.init_app(app)`` in an app factory. Tasks are registered on the
    ``Offload`` object and shared by every app it is initialised for.
    """

    def __init__(self, app: Flask | None = None) -> None:
        self.tasks: dict[str, Task[Any, Any]] = {}
        #: The periodic tasks' schedules, by task name.
        self.schedules: dict[str, Schedule] = {}
        self._states: list[OffloadState] = []
        #: The app's own access rule for the dashboard; see
        #: :meth:`authorize_dashboard`.
        self.dashboard_authorizer: Callable[[], bool] | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, *, engine: Engine | None = None) -> None:
        """Read the app's ``OFFLOAD_*`` settings, open the store and arrange
        for the worker to start in the process that serves requests.

        ``engine`` is a SQLAlchemy engine on PostgreSQL the app already has
        (``db.engine`` with Flask-SQLAlchemy), to keep the jobs in its
        database instead of one ``OFFLOAD_URL`` names.

        :raises ConfigurationError: if a setting is unknown or not accepted,
            or the engine is not PostgreSQL.
        """
        settings = load_settings(app.config, app.instance_path)
        if engine is None and settings.url.startswith("sqlite:///"):
            os.makedirs(app.instance_path, exist_ok=True)
        state = OffloadState(self, app, settings, engine)
        if settings.metrics_url is not None:
            from .metrics import install

            install(app, state.store, settings.metrics_url)
        if settings.dashboard_url is not None:
            from .dashboard import make_blueprint

            app.register_blueprint(
                make_blueprint(self, settings), url_prefix=settings.dashboard_url
            )
        state.store.open()
        app.extensions[EXTENSION_KEY] = state
        self._states.append(state)

        atexit.register(state.stop_worker)
        call_after_fork(state.after_fork_in_child)
        if settings.worker_threads > 0:
            check_threads_can_run()
            self._arrange_start(state)

    def _arrange_start(self, state: OffloadState) -> None:
        state.start_mode = start_mode(state.app)
        logger.debug(
            "The in-process worker of %s starts %s",
            state.app.name,
            state.start_mode.value,
        )
        if state.start_mode is StartMode.NOW:
            if is_dev_server():
                exit_gracefully_on_sigterm()
            state.start_worker()
        elif state.start_mode is StartMode.FIRST_REQUEST:

            def start_on_first_request() -> None:
                state.start_worker()

            state.app.before_request(start_on_first_request)

    def authorize_dashboard(self, function: Callable[[], bool]) -> Callable[[], bool]:
        """Decide who may open the dashboard: decorate a function of no
        arguments that returns whether the current request may see it, for
        example ``return current_user.is_authenticated and
        current_user.is_admin``.

        Without it the dashboard answers only a debug app's requests from
        this machine, so a deployed app shows jobs' arguments and results to
        no one by accident. Once set, the function alone decides, in debug
        too.
        """
        self.dashboard_authorizer = function

        return function

    def task(
        self,
        function: None = None,
        /,
        *,
        name: str | None = None,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
        concurrency_key: ConcurrencyKey = None,
        concurrency_limit: int = 1,
        unique_key: ConcurrencyKey = None,
        retries: int = 0,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        retry_backoff: float = 2.0,
        retry_backoff_max: float = 3600.0,
        retry_jitter: bool = True,
        keep_finished: float | None = None,
        timeout: float | None = None,
    ) -> Callable[[Callable[P, R]], Task[P, R]]:
        """Register a function as a task: ``@offload.task()`` or
        ``@offload.task(queue="reports", priority=5)``.

        ``concurrency_key`` keeps jobs that share a resource apart: at most
        ``concurrency_limit`` jobs with the same key run at once, across all
        processes. It is a str, or a function called with the job's
        arguments that returns one (or ``None`` for no limit), for example
        ``concurrency_key=lambda user_id, **_: f"user:{user_id}"``.

        ``unique_key`` (a str or a function of the arguments, like
        ``concurrency_key``): while a job with the same key is scheduled,
        queued or running, enqueueing returns that job instead of a new one.

        ``retries``: how many times a failed attempt is tried again, when its
        exception is one of ``retry_on``; the wait doubles from
        ``retry_backoff`` seconds up to ``retry_backoff_max``, with jitter
        unless ``retry_jitter=False``. A task can also ask for a retry by
        raising :class:`~flask_offload.Retry`.

        ``keep_finished``: seconds this task's finished jobs (and their
        results) are kept, instead of ``OFFLOAD_KEEP_FINISHED``.

        ``timeout``: seconds an attempt may run; past it the worker raises
        :class:`~flask_offload.JobTimeout` inside the task (see there for
        what Python can and cannot interrupt).

        The task's name defaults to ``module.function``; it is how stored jobs
        find their function again, so renaming a function strands its queued
        jobs unless ``name=`` keeps the old name.

        :raises ValueError: if another function has that name already.
        """
        if function is not None:
            raise TypeError(
                "Use @offload.task() with parentheses, or @offload.task(name=...)."
            )
        defaults = EnqueueOptions().updated(
            queue=queue,
            priority=priority,
            concurrency_key=concurrency_key,
            concurrency_limit=concurrency_limit,
            unique_key=unique_key,
            timeout=timeout,
        )
        retry = RetryPolicy(
            retries=retries,
            retry_on=retry_on,
            backoff=retry_backoff,
            backoff_max=retry_backoff_max,
            jitter=retry_jitter,
        )

        def register(function: Callable[P, R]) -> Task[P, R]:
            task_name = name or f"{function.__module__}.{function.__qualname__}"
            if task_name in self.tasks:
                raise ValueError(
                    f"A task named {task_name!r} is registered already; give one "
                    f"of them another name with @offload.task(name=...)."
                )
            task = Task(
                function, task_name, defaults, self._target, retry, keep_finished
            )
            self.tasks[task_name] = task

            return task

        return register

    def periodic(
        self,
        cron: str | None = None,
        /,
        *,
        every: float | timedelta | None = None,
        name: str | None = None,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
        retries: int = 0,
    ) -> Callable[[Callable[[], R]], Task[[], R]]:
        """Register a task that runs by itself: on a cron expression,
        ``@offload.periodic("*/5 * * * *")`` (read in UTC; needs
        ``flask-offload[cron]``), or at a fixed interval,
        ``@offload.periodic(every=timedelta(minutes=5))``.

        Each tick is enqueued once, whatever the number of processes and
        machines with a worker; after downtime the missed ticks run once,
        not once each. The function takes no arguments. It is an ordinary
        task too, so it can also be enqueued by hand.

        :raises ValueError: for a cron expression croniter cannot read, or an
            interval that is not a positive number of seconds.
        """
        schedule_every = schedule_seconds(every)
        register = self.task(name=name, queue=queue, priority=priority, retries=retries)

        def register_periodic(function: Callable[[], R]) -> Task[[], R]:
            task_name = name or f"{function.__module__}.{function.__qualname__}"
            schedule = Schedule(task=task_name, cron=cron, every=schedule_every)
            task = register(function)
            self.schedules[task.name] = schedule

            return task

        return register_periodic

    def scheduled(self, app: Flask | None = None) -> list[dict[str, Any]]:
        """Each periodic task's schedule and next run time, as stored."""
        store = self.state(app).store
        listed = []
        for name, spec, next_run_at in store.list_schedules():
            listed.append(
                {
                    "name": name,
                    "schedule": spec,
                    "next_run_at": datetime.fromtimestamp(next_run_at, timezone.utc),
                }
            )

        return listed

    def _target(self) -> OffloadState:
        return self.state()

    def state(self, app: Flask | None = None) -> OffloadState:
        """The state of ``app``, of the current app, or of the only app this
        extension was initialised for."""
        if app is None and has_app_context():
            app = current_app._get_current_object()  # type: ignore[attr-defined]
        if app is not None:
            state = app.extensions.get(EXTENSION_KEY)
            if state is None or state.offload is not self:
                raise RuntimeError(
                    f"Flask-Offload is not initialised for app {app.name!r}; call "
                    f"offload.init_app(app) in the app factory."
                )
            return state  # type: ignore[no-any-return]

        if len(self._states) == 1:
            return self._states[0]
        if not self._states:
            raise RuntimeError(
                "Flask-Offload is not initialised for any app; call "
                "Offload(app) or offload.init_app(app) first."
            )
        raise RuntimeError(
            "Flask-Offload is initialised for several apps; enqueue inside an "
            "app context (with app.app_context():) to say which one."
        )

    def close(self, app: Flask | None = None) -> None:
        """Stop the app's worker (see :meth:`stop_worker`), close its store and
        forget the app. For tests that build many apps; a served app needs
        nothing of the kind, as the worker stops by itself at exit."""
        state = self.state(app)
        state.close()
        self._states.remove(state)
        del state.app.extensions[EXTENSION_KEY]

    @property
    def store(self) -> Store:
        return self.state().store

    def get_job(self, job_id: str) -> Job | None:
        """The job with this id, or ``None`` if there is none (or it was
        purged)."""
        record = self.store.get(job_id)

        return None if record is None else Job(self.store, record)

    def jobs(
        self,
        *,
        queue: str | None = None,
        status: Status | None = None,
        task: str | None = None,
        limit: int = 50,
        offset: int = 0,
        before: str | None = None,
        after: str | None = None,
    ) -> list[Job]:
        """Jobs, newest first, optionally only of one queue, status or task.

        To page through many, pass the id of the last job of a page as
        ``before`` to get the next (older) page, or the first one's as
        ``after`` for the previous (newer) page: that costs the same at any
        depth, where ``offset`` makes the store step over every job it skips.
        """
        where = ListFilter(
            queue=queue,
            status=status,
            task=task,
            limit=limit,
            offset=offset,
            before=before,
            after=after,
        )
        store = self.store

        return [Job(store, record) for record in store.list_jobs(where)]

    def stats(self) -> dict[str, dict[Status, int]]:
        """How many jobs each queue has in each status, counted in the store,
        so every process sees the same numbers. For example
        ``{"default": {"queued": 3, "running": 1, "succeeded": 10, ...}}``."""
        return self.store.counts()

    def make_worker(
        self,
        app: Flask,
        *,
        threads: int,
        queues: list[str] | None = None,
        job_processes: bool = False,
        app_import_path: str | None = None,
    ) -> Worker:
        """A worker for ``app`` that runs each job inside an app context: in
        its own threads, or with ``job_processes`` in child processes that
        load the app from ``app_import_path`` (as ``flask --app`` names it)
        and can be killed at a job's timeout."""
        state = self.state(app)
        name = default_worker_name()
        log_level = state.settings.job_log_level
        runner = (
            ProcessRunner(app_import_path, name, log_level) if job_processes else None
        )

        return Worker(
            state.store,
            self.tasks.get,
            threads=threads,
            queues=queues,
            lease=state.settings.lease_seconds,
            max_recoveries=state.settings.max_recoveries,
            job_context=app.app_context,
            purge=state.purge_finished,
            fire_schedules=state.fire_due_schedules,
            name=name,
            runner=runner,
            sender=app,
            log_level=log_level,
        )

    def drain(self, app: Flask | None = None, *, max_jobs: int | None = None) -> int:
        """Run every job that is due, one after another in the calling
        thread, until none is left (or ``max_jobs`` ran), and return how many
        ran. For tests: enqueue, then ``offload.drain()``, then assert on the
        results. Jobs scheduled for later, and retries waiting for their
        time, are left alone."""
        return self.state(app).inline_worker().drain(max_jobs)

    def start_worker(
        self, app: Flask | None = None, *, threads: int | None = None
    ) -> Worker:
        """Start the in-process worker now, if it is not running, with
        ``threads`` threads (default ``OFFLOAD_WORKER_THREADS``, at least 1).

        The worker starts by itself in the serving process; call this where
        it does not, for example in a test or a script."""
        return self.state(app).start_worker(threads)

    def stop_worker(self, app: Flask | None = None, grace: float | None = None) -> None:
        """Stop the in-process worker: running jobs get ``grace`` seconds
        (default ``OFFLOAD_SHUTDOWN_GRACE``) to finish, the rest are handed
        back to the queue."""
        self.state(app).stop_worker(grace)


def _make_store(settings: Settings, engine: Engine | None = None) -> Store:
    if engine is not None:
        if engine.dialect.name != "postgresql":
            raise ConfigurationError(
                f"init_app(engine=...) takes a PostgreSQL engine, not "
                f"{engine.dialect.name!r}: Flask-Offload runs SQLite with its "
                f"own connection settings, so give OFFLOAD_URL instead."
            )
        handed = SQLStore(engine=engine, poll_interval=settings.poll_interval)
        handed.queue_limits = dict(settings.queues)
        return handed

    options: dict[str, Any] = {}
    if settings.url.startswith("sqlite"):
        options = {
            "sqlite_synchronous": settings.sqlite_synchronous,
            "poll_interval": settings.poll_interval,
        }
    store = store_from_url(settings.url, **options)
    store.queue_limits = dict(settings.queues)
    if isinstance(store, SQLStore):
        logger.debug("Flask-Offload stores jobs in %s", store.describe())

    return store
