"""``Task``: a function registered to run in the background."""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar

import sqlalchemy

from . import signals
from .codec import encode_arguments
from .job import Job
from .records import DEFAULT_QUEUE, QUEUED, SCHEDULED, JobRecord, new_job_id

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from .stores.base import Store
    from .worker import Worker


class EnqueueTarget(Protocol):
    """Where a task's jobs go: the app's store, and the worker running in
    this process, if any."""

    store: Store
    worker: Worker | None
    eager: bool
    app: Any

    def inline_worker(self) -> Worker: ...


P = ParamSpec("P")
R = TypeVar("R")


#: A concurrency key, or a function of the task's arguments that returns one.
ConcurrencyKey = str | Callable[..., str | None] | None

MAX_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class EnqueueOptions:
    """Where, in what order and beside what else one job runs."""

    queue: str = DEFAULT_QUEUE
    priority: int = 0
    concurrency_key: ConcurrencyKey = None
    concurrency_limit: int = 1
    unique_key: ConcurrencyKey = None
    delay: float | timedelta | None = None
    run_at: datetime | None = None
    timeout: float | None = None
    #: A SQLAlchemy connection in the app's own transaction: the job is
    #: stored in it, so it exists if and only if that transaction commits.
    connection: Connection | None = None

    def updated(self, **changes: Any) -> EnqueueOptions:
        unknown = sorted(set(changes) - set(self.__slots__))
        if unknown:
            raise TypeError(
                f"Unknown enqueue option(s) {', '.join(map(repr, unknown))}; "
                f"accepted: {', '.join(self.__slots__)}."
            )
        options = replace(self, **changes)
        options.validate()

        return options

    def validate(self) -> None:
        if not isinstance(self.queue, str) or not self.queue:
            raise ValueError(f"queue must be a non-empty str, not {self.queue!r}.")
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise TypeError(f"priority must be an int, not {self.priority!r}.")
        for name in ("concurrency_key", "unique_key"):
            key = getattr(self, name)
            if not (key is None or callable(key)):
                _check_key(name, key)
        _check_when(self.delay, self.run_at)
        if self.connection is not None and not isinstance(
            self.connection, sqlalchemy.Connection
        ):
            raise TypeError(
                f"connection must be a SQLAlchemy Connection in the app's open "
                f"transaction, such as db.session.connection(), not "
                f"{self.connection!r}."
            )
        timeout = self.timeout
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not timeout > 0
        ):
            raise ValueError(
                f"timeout must be a number of seconds greater than 0, or None, "
                f"not {timeout!r}."
            )
        limit = self.concurrency_limit
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(
                f"concurrency_limit must be an int of at least 1, not {limit!r}."
            )

    def key_for(self, name: str, args: Any, kwargs: dict[str, Any]) -> str | None:
        """The job's ``concurrency_key`` or ``unique_key``, derived from its
        arguments if the task gave a function."""
        key = getattr(self, name)
        if callable(key):
            key = key(*args, **kwargs)
            if key is not None:
                _check_key(name, key)

        return key  # type: ignore[no-any-return]

    def run_at_time(self, now: float) -> float:
        """When the job may start, in seconds since the epoch."""
        if self.run_at is not None:
            return self.run_at.timestamp()
        if isinstance(self.delay, timedelta):
            return now + self.delay.total_seconds()
        if self.delay is not None:
            return now + self.delay

        return now


def _check_key(name: str, key: object) -> None:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise ValueError(
            f"{name} must be a non-empty str of at most {MAX_KEY_LENGTH} "
            f"characters (or a function of the task's arguments returning one), "
            f"not {key!r}."
        )


def _check_when(delay: object, run_at: object) -> None:
    if delay is not None and run_at is not None:
        raise ValueError("Give delay or run_at, not both.")
    if delay is not None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, (int, float))
            or not math.isfinite(seconds)
            or seconds < 0
        ):
            raise ValueError(
                f"delay must be a number of seconds or a timedelta, 0 or more, "
                f"not {delay!r}."
            )
    if run_at is not None and (
        not isinstance(run_at, datetime) or run_at.utcoffset() is None
    ):
        raise ValueError(
            f"run_at must be a timezone-aware datetime, such as "
            f"datetime.now(timezone.utc) + timedelta(hours=1), not {run_at!r}."
        )


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a task's failed attempts are tried again.

    A failed attempt is retried while the job has had no more than
    ``retries`` attempts and the exception is one of ``retry_on``. The wait
    before attempt ``n + 1`` doubles from ``backoff`` seconds, is capped at
    ``backoff_max``, and with ``jitter`` is drawn between half of that and
    all of it, so that jobs that failed together do not retry together.
    """

    retries: int = 0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    backoff: float = 2.0
    backoff_max: float = 3600.0
    jitter: bool = True

    def __post_init__(self) -> None:
        retries = self.retries
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an int of 0 or more, not {retries!r}.")
        kinds = self.retry_on
        if not isinstance(kinds, tuple) or not all(
            isinstance(kind, type) and issubclass(kind, BaseException) for kind in kinds
        ):
            raise TypeError(
                f"retry_on must be a tuple of exception classes, not {kinds!r}."
            )
        for name in ("backoff", "backoff_max"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(
                    f"retry_{name} must be a number of seconds, 0 or more, "
                    f"not {value!r}."
                )

    def delay_after(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt``."""
        delay = float(min(self.backoff_max, self.backoff * 2 ** (attempt - 1)))
        if self.jitter:
            delay = random.uniform(delay / 2, delay)

        return delay


class Task(Generic[P, R]):
    """A function registered with :meth:`Offload.task`.

    Calling the task runs the function here and now; :meth:`enqueue` runs it
    on a worker. :meth:`using` sets options for one enqueue.
    """

    def __init__(
        self,
        function: Callable[P, R],
        name: str,
        options: EnqueueOptions,
        target: Callable[[], EnqueueTarget],
        retry: RetryPolicy | None = None,
        keep_finished: float | None = None,
    ) -> None:
        if keep_finished is not None and (
            isinstance(keep_finished, bool)
            or not isinstance(keep_finished, (int, float))
            or keep_finished < 0
        ):
            raise ValueError(
                f"keep_finished must be a number of seconds, 0 or more (math.inf "
                f"keeps them forever), or None for OFFLOAD_KEEP_FINISHED, not "
                f"{keep_finished!r}."
            )
        self.function = function
        self.name = name
        self.options = options
        self.retry = retry or RetryPolicy()
        #: How long this task's finished jobs are kept, if not the app's
        #: ``OFFLOAD_KEEP_FINISHED``.
        self.keep_finished = keep_finished
        self._target = target
        functools.update_wrapper(self, function)

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.function(*args, **kwargs)

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """Queue a run of the task with these arguments and return its job at
        once. The job is stored durably before this returns.

        :raises TypeError: if an argument cannot be stored as JSON.
        """
        return self._enqueue(self.options, args, kwargs)

    def using(self, **options: Any) -> BoundTask[P, R]:
        """Options for one enqueue: ``queue`` (a queue's name), ``priority``
        (higher runs first), ``concurrency_key`` (at most
        ``concurrency_limit`` jobs with the same key run at once, across all
        processes; the limit defaults to 1). For example
        ``report.using(queue="reports", priority=10).enqueue(42)`` or
        ``sync.using(concurrency_key=f"user:{user_id}").enqueue(user_id)``.

        :raises TypeError: for an option that does not exist.
        """
        return BoundTask(self, self.options.updated(**options))

    def tick_record(self, now: float) -> JobRecord:
        """The job a periodic tick enqueues: no arguments, the task's own
        queue and priority."""
        return JobRecord(
            id=new_job_id(),
            task=self.name,
            arguments=encode_arguments(self.name, (), {}),
            queue=self.options.queue,
            priority=self.options.priority,
            timeout=self.options.timeout,
            status=QUEUED,
            enqueued_at=now,
            run_at=now,
        )

    def _enqueue(
        self, options: EnqueueOptions, args: Any, kwargs: dict[str, Any]
    ) -> Job:
        target = self._target()
        job = self._store_job(target, options, args, kwargs)
        signals.send(signals.job_enqueued, target.app, job=job)

        return job

    def _store_job(
        self,
        target: EnqueueTarget,
        options: EnqueueOptions,
        args: Any,
        kwargs: dict[str, Any],
    ) -> Job:
        store = target.store
        now = store.clock()
        key = options.key_for("concurrency_key", args, kwargs)
        run_at = options.run_at_time(now)
        record = JobRecord(
            id=new_job_id(),
            task=self.name,
            arguments=encode_arguments(self.name, args, kwargs),
            queue=options.queue,
            priority=options.priority,
            status=SCHEDULED if run_at > now else QUEUED,
            enqueued_at=now,
            run_at=run_at,
            concurrency_key=key,
            concurrency_limit=None if key is None else options.concurrency_limit,
            unique_key=options.key_for("unique_key", args, kwargs),
            timeout=options.timeout,
        )

        if options.connection is not None:
            return self._enqueue_in_transaction(store, options.connection, record)
        if target.eager:
            return self._run_eagerly(target, record)

        # A job under a limit must go through a claim, which counts what runs;
        # a unique job may turn out to be an existing one; a scheduled job
        # must wait for its time.
        must_wait = (
            key is not None
            or record.queue in store.queue_limits
            or record.unique_key is not None
            or record.status == SCHEDULED
        )
        worker = target.worker
        if must_wait or worker is None or not worker.reserve_thread(record.queue):
            return Job(store, store.enqueue(record))

        # A thread of this process's worker is idle: store the job as already
        # claimed by it and hand it over, which saves the worker a claim.
        try:
            stored = store.enqueue(worker.claimed_now(record))
        except BaseException:
            worker.unreserve_thread()
            raise
        worker.hand_over(stored)

        return Job(store, stored)

    def _enqueue_in_transaction(
        self, store: Store, connection: Connection, record: JobRecord
    ) -> Job:
        """Store the job through the app's connection, inside its open
        transaction, and leave the commit to the app."""
        from .stores.sql import SQLStore

        if not isinstance(store, SQLStore):
            raise TypeError(
                f"using(connection=...) needs an SQL store (SQLite or "
                f"PostgreSQL), and this app's store is {store.describe()!r}."
            )

        return Job(store, store.enqueue_in(connection, record))

    def _run_eagerly(self, target: EnqueueTarget, record: JobRecord) -> Job:
        """Store the job and run it here and now, as the worker would; see
        ``OFFLOAD_EAGER``. A scheduled job is stored and left for later."""
        store = target.store
        if record.status == SCHEDULED:
            return Job(store, store.enqueue(record))

        runner = target.inline_worker()
        stored = store.enqueue(runner.claimed_now(record))
        if stored.id == record.id:
            runner.run_now(stored)

        return Job(store, stored).refresh()


class BoundTask(Generic[P, R]):
    """A task with options set for the next enqueue; see :meth:`Task.using`."""

    def __init__(self, task: Task[P, R], options: EnqueueOptions) -> None:
        self.task = task
        self.options = options

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        return self.task._enqueue(self.options, args, kwargs)
