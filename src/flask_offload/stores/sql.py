"""The SQL store, on SQLAlchemy Core.

One implementation serves every SQL engine; what differs between engines
(how a write transaction starts, how other processes' changes are noticed)
is kept in small methods. Today it runs on SQLite, the embedded default.

SQLite notes. Every write transaction starts with ``BEGIN IMMEDIATE``: a
deferred transaction that reads and then writes can fail at once with
``database is locked`` when another connection wrote in between, without
waiting, so taking the write lock up front is what lets the busy timeout do
its work. Changes made by other processes are noticed by polling
``PRAGMA data_version``, which reads shared memory and costs microseconds.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import (
    Callable,
    Hashable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import contextmanager, nullcontext
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.sql.expression import ClauseElement

from ..records import (
    CANCELLED,
    FAILED,
    FINISHED_STATUSES,
    QUEUED,
    RUNNING,
    WAITING_STATUSES,
    JobRecord,
    Outcome,
    Status,
)
from .base import Bell, Clock, Heartbeat, ListFilter, Store, page_of
from .limits import Admission
from .messages import lost_worker_error
from .pg_listener import CHANGE_CHANNEL, WORK_CHANNEL, NotifyListener
from .sql_schema import jobs, migrate, schedules
from .sql_statements import (
    _COLUMNS,
    _FINISH,
    _INSERT_AND_NOTIFY,
    _IS_QUEUED,
    _IS_RUNNING,
    _IS_SCHEDULED,
    _PROMOTE_DUE,
    _RUNNING,
    _SAME_UNIQUE_KEY,
    _TAKE_OFFERED,
    _as_record,
    _as_row,
    _finished_per_minute_statement,
    _held_statement,
    _is_unique_violation,
    _list_statement,
    _numbered,
    _padded,
    _Prepared,
    _ready_statement,
    _start_statement,
    _tuple,
)
from .sqlite_lock import SQLiteWriteLock, write_lock_for

logger = logging.getLogger(__name__)

SQLITE_SYNCHRONOUS_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")

_NOT_CHOSEN = object()


class SQLStore(Store):
    """Jobs in one table of an SQL database.

    :param url: an SQLAlchemy URL such as ``sqlite:////path/offload.sqlite3``.
    :param engine: an engine the application already has, instead of a URL.
    :param sqlite_synchronous: SQLite's ``synchronous`` level. ``NORMAL`` (the
        default) survives a crash of the process but may lose the last
        commits on a power loss; ``FULL`` survives both and costs a sync of
        the disk on every commit.
    :param poll_interval: how often, in seconds, an idle worker checks whether
        another process changed the database.
    :param busy_timeout: how long, in seconds, a write waits for another
        connection's write lock before giving up.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        engine: Engine | None = None,
        sqlite_synchronous: str = "NORMAL",
        poll_interval: float = 0.05,
        busy_timeout: float = 30.0,
        clock: Clock | None = None,
        queue_limits: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__(clock, queue_limits)
        if (url is None) == (engine is None):
            raise ValueError("SQLStore takes either a url or an engine, not both.")
        if sqlite_synchronous.upper() not in SQLITE_SYNCHRONOUS_LEVELS:
            raise ValueError(
                f"sqlite_synchronous must be one of "
                f"{', '.join(SQLITE_SYNCHRONOUS_LEVELS)}, not {sqlite_synchronous!r}."
            )
        self._url = url
        self._engine = engine
        self._owns_engine = engine is None
        self._synchronous = sqlite_synchronous.upper()
        self._busy_timeout = busy_timeout
        self.poll_interval = poll_interval
        self._opened = False
        self._open_lock = threading.Lock()
        self._watch_lock = threading.Lock()
        self._watch_connection: Connection | None = None
        self._watched_version: int | None = None
        self._statements: dict[Hashable, _Prepared] = {}
        self._listener: NotifyListener | None = None
        self._write_lock: SQLiteWriteLock | object | None = _NOT_CHOSEN

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            assert self._url is not None
            self._engine = self._create_engine(self._url)

        return self._engine

    @property
    def write_lock(self) -> SQLiteWriteLock | None:
        """The lock that queues this database's writers fairly across
        processes, or ``None`` where there is none (not SQLite, not a file);
        see :mod:`.sqlite_lock`."""
        if self._write_lock is _NOT_CHOSEN:
            url = self.engine.url
            self._write_lock = (
                write_lock_for(url.database, url.query) if self.is_sqlite else None
            )

        return self._write_lock  # type: ignore[return-value]

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def open(self) -> None:
        with self._open_lock:
            if self._opened:
                return
            with self._write() as connection:
                if self.is_postgres:
                    # Processes starting together migrate one at a time.
                    connection.execute(
                        select(func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY))
                    )
                found = migrate(connection)
            if found == 0:
                logger.info("Created the Flask-Offload tables in %s", self.describe())
            self._opened = True

    def close(self) -> None:
        with self._watch_lock:
            if self._watch_connection is not None:
                self._watch_connection.close()
                self._watch_connection = None
            if self._listener is not None:
                self._listener.stop()
                self._listener = None
        if self._engine is not None and self._owns_engine:
            self._engine.dispose()
            self._engine = None
        if isinstance(self._write_lock, SQLiteWriteLock):
            self._write_lock.close()
        self._write_lock = _NOT_CHOSEN

    def after_fork(self) -> None:
        self._watch_connection = None
        self._listener = None
        self._watch_lock = threading.Lock()
        if self._engine is not None:
            self._engine.dispose(close=False)
        if isinstance(self._write_lock, SQLiteWriteLock):
            self._write_lock.after_fork()

    def describe(self) -> str:
        """The database's URL with any password hidden, for messages."""
        return self.engine.url.render_as_string(hide_password=True)

    def enqueue(self, job: JobRecord) -> JobRecord:
        if self.is_postgres and job.unique_key is None:
            self._insert_and_notify(job)
            self._work.ring()
            self._changes.ring()
            return job

        insert_job = self._prepared("insert", lambda: insert(jobs))
        try:
            with self._write_cursor() as cursor:
                if job.unique_key is not None:
                    existing = self._same_unique_key(cursor, job.unique_key)
                    if existing is not None:
                        return existing
                insert_job.execute(cursor, _as_row(job))
                self._notify(cursor, offer=self._offer_of(job))
        except Exception as error:
            # Another process inserted the same unique key between our read
            # and our insert; the unique index refused ours, so take theirs.
            if job.unique_key is None or not _is_unique_violation(error):
                raise
            with self._write_cursor() as cursor:
                existing = self._same_unique_key(cursor, job.unique_key)
            if existing is None:
                raise
            return existing
        self._work.ring()
        self._changes.ring()

        return job

    def _insert_and_notify(self, job: JobRecord) -> None:
        """Insert ``job`` and send its NOTIFY in one statement outside a
        transaction block: one round trip instead of four (BEGIN, INSERT,
        NOTIFY, COMMIT), with the same durability, since the statement
        commits, waiting for the disk, before it returns."""
        statement = self._prepared("insert-and-notify", lambda: _INSERT_AND_NOTIFY)
        values = {
            **_as_row(job),
            "b_channel": WORK_CHANNEL,
            "b_offer": self._offer_of(job),
        }
        with self._autocommit_cursor() as cursor:
            statement.execute(cursor, values)

    @contextmanager
    def _autocommit_cursor(self) -> Iterator[Any]:
        """A DBAPI cursor on PostgreSQL outside a transaction block, where
        each statement commits on its own: for the one-statement paths,
        which then cost one round trip."""
        connection = self.engine.raw_connection()
        try:
            driver = connection.driver_connection
            assert driver is not None
            driver.autocommit = True
            try:
                cursor = connection.cursor()
                yield cursor
                cursor.close()
            finally:
                driver.autocommit = False
        finally:
            connection.close()

    def enqueue_in(self, connection: Connection, job: JobRecord) -> JobRecord:
        """Store a job through the caller's connection, in its open
        transaction: the job exists if and only if that transaction commits.
        The connection must reach this store's database."""
        if job.unique_key is not None:
            row = connection.execute(
                _SAME_UNIQUE_KEY, {"b_key": job.unique_key}
            ).first()
            if row is not None:
                return _as_record(row)
        connection.execute(insert(jobs).values(_as_row(job)))
        self._notify_on(connection)
        # Committed or not, a worker of this process looks: if the caller has
        # not committed yet, it finds nothing and the next change wakes it.
        self._work.ring()

        return job

    def _same_unique_key(self, cursor: Any, key: str) -> JobRecord | None:
        same = self._prepared("unique", lambda: _SAME_UNIQUE_KEY)
        row = same.execute(cursor, {"b_key": key}).fetchone()

        return None if row is None else _as_record(row)

    def _notify_on(self, connection: Connection, channel: str | None = None) -> None:
        """:meth:`_notify` for a SQLAlchemy connection."""
        if self.is_postgres:
            connection.exec_driver_sql(f"NOTIFY {channel or WORK_CHANNEL}")

    def _notify(self, cursor: Any, channel: str | None = None, offer: str = "") -> None:
        """Tell workers in other processes that a job may be ready (or, on
        the change channel, that a job changed): on PostgreSQL through
        NOTIFY, delivered when the transaction commits; SQLite's waiters
        watch ``data_version`` instead. ``offer`` names a job an idle thread
        may claim by its id (see :meth:`_offer_of`)."""
        if self.is_postgres:
            cursor.execute("SELECT pg_notify(%s, %s)", (channel or WORK_CHANNEL, offer))

    def _offer_of(self, job: JobRecord) -> str:
        """``"{id} {queue}"`` for a job that a claim of that one row may
        start (queued, due, no concurrency key, a queue with no limit), or
        ``""``: then idle threads make a claim of their own."""
        if (
            job.status != QUEUED
            or job.run_at > self.clock()
            or job.concurrency_key is not None
            or job.queue in self.queue_limits
        ):
            return ""

        return f"{job.id} {job.queue}"

    def claim(
        self, worker: str, queues: Sequence[str] | None, limit: int, lease: float
    ) -> list[JobRecord]:
        with self._write_cursor(relaxed=True) as cursor:
            claimed = self._claim(cursor, worker, queues, limit, lease)
        if claimed:
            self._changes.ring()

        return claimed

    def finish(self, worker: str, outcomes: Sequence[Outcome]) -> list[str]:
        with self._write_cursor(relaxed=True) as cursor:
            applied = self._finish(cursor, worker, outcomes)
            self._notify(cursor, CHANGE_CHANNEL)
        self._changes.ring()

        return applied

    def finish_and_claim(
        self,
        worker: str,
        outcomes: Sequence[Outcome],
        queues: Sequence[str] | None,
        limit: int,
        lease: float,
    ) -> tuple[list[str], list[JobRecord]]:
        with self._write_cursor(relaxed=True) as cursor:
            applied = self._finish(cursor, worker, outcomes) if outcomes else []
            if applied:
                self._notify(cursor, CHANGE_CHANNEL)
            claimed = self._claim(cursor, worker, queues, limit, lease)
        if applied or claimed:
            self._changes.ring()

        return applied, claimed

    def heartbeat(self, worker: str, job_ids: Iterable[str], lease: float) -> Heartbeat:
        wanted = list(job_ids)
        if not wanted:
            return Heartbeat(cancel_requested=frozenset(), lost=frozenset())

        held = and_(_IS_RUNNING, jobs.c.worker == worker)
        with self._write() as connection:
            connection.execute(
                update(jobs)
                .where(jobs.c.id.in_(wanted), held)
                .values(lease_expires_at=self.clock() + lease)
            )
            rows = connection.execute(
                select(jobs.c.id, jobs.c.cancel_requested).where(
                    jobs.c.id.in_(wanted), held
                )
            ).all()

        still_held = {row.id for row in rows}

        return Heartbeat(
            cancel_requested=frozenset(row.id for row in rows if row.cancel_requested),
            lost=frozenset(set(wanted) - still_held),
        )

    def release(self, worker: str, job_ids: Iterable[str], *, started: bool) -> int:
        wanted = list(job_ids)
        if not wanted:
            return 0

        attempts = jobs.c.attempts if started else jobs.c.attempts - 1
        with self._write() as connection:
            released = connection.execute(
                update(jobs)
                .where(
                    jobs.c.id.in_(wanted),
                    _IS_RUNNING,
                    jobs.c.worker == worker,
                )
                .values(
                    status=QUEUED,
                    worker=None,
                    lease_expires_at=None,
                    started_at=None,
                    attempts=attempts,
                )
            ).rowcount
            self._notify_on(connection)
        self._work.ring()
        self._changes.ring()

        return released

    def recover(self, max_recoveries: int) -> list[JobRecord]:
        now = self.clock()
        expired = and_(_IS_RUNNING, jobs.c.lease_expires_at < now)

        # A read first, so that the common case (nothing expired) never takes
        # the write lock.
        with self._read() as connection:
            anything = connection.execute(select(jobs.c.id).where(expired).limit(1))
            if anything.first() is None:
                return []

        with self._write() as connection:
            rows = connection.execute(select(*_COLUMNS).where(expired)).all()
            recovered = [_as_record(row) for row in rows]
            for job in recovered:
                if job.recoveries >= max_recoveries:
                    values: dict[str, Any] = {
                        "status": FAILED,
                        "finished_at": now,
                        "error": lost_worker_error(job, max_recoveries),
                    }
                else:
                    values = {
                        "status": QUEUED,
                        "started_at": None,
                        "recoveries": job.recoveries + 1,
                    }
                connection.execute(
                    update(jobs)
                    .where(jobs.c.id == job.id, expired)
                    .values(worker=None, lease_expires_at=None, **values)
                )
            if recovered:
                self._notify_on(connection)
        if recovered:
            self._work.ring()
            self._changes.ring()

        return recovered

    def get(self, job_id: str) -> JobRecord | None:
        get_job = self._prepared(
            "get", lambda: select(*_COLUMNS).where(jobs.c.id == bindparam("job_id"))
        )
        with self._read_cursor() as cursor:
            row = get_job.execute(cursor, {"job_id": job_id}).fetchone()

        return None if row is None else _as_record(row)

    def list_jobs(self, where: ListFilter) -> list[JobRecord]:
        query = _list_statement(where)
        with self._read() as connection:
            rows = connection.execute(query).all()
        records = [_as_record(row) for row in rows]
        if where.status == RUNNING:
            # Read whole: see _list_statement.
            return page_of(records, where)

        return records[::-1] if where.after is not None else records

    def counts(self) -> dict[str, dict[Status, int]]:
        query = select(jobs.c.queue, jobs.c.status, func.count()).group_by(
            jobs.c.queue, jobs.c.status
        )
        with self._read() as connection:
            rows = connection.execute(query).all()

        counts: dict[str, dict[Status, int]] = {}
        for queue, status, count in rows:
            counts.setdefault(queue, self.empty_counts())[status] = count

        return counts

    def finished_per_minute(self, since: int) -> dict[tuple[int, Status], int]:
        query = _finished_per_minute_statement(since, postgres=self.is_postgres)
        with self._read() as connection:
            rows = connection.execute(query).all()

        return {(int(number) * 60, status): count for number, status, count in rows}

    def set_progress(
        self, job_id: str, worker: str, attempt: int, progress: str
    ) -> bool:
        set_progress = self._prepared(
            "progress",
            lambda: (
                update(jobs)
                .where(
                    jobs.c.id == bindparam("b_id"),
                    _IS_RUNNING,
                    jobs.c.worker == bindparam("b_worker"),
                    jobs.c.attempts == bindparam("b_attempt"),
                )
                .values(progress=bindparam("b_progress"))
                .returning(jobs.c.cancel_requested)
            ),
        )
        values = {
            "b_id": job_id,
            "b_worker": worker,
            "b_attempt": attempt,
            "b_progress": progress,
        }
        with self._write_cursor() as cursor:
            row = set_progress.execute(cursor, values).fetchone()
        self._changes.ring()

        return bool(row and row[0])

    def cancel(self, job_id: str) -> Status | None:
        with self._write() as connection:
            connection.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status.in_(WAITING_STATUSES))
                .values(status=CANCELLED, finished_at=self.clock())
            )
            connection.execute(
                update(jobs)
                .where(jobs.c.id == job_id, _IS_RUNNING)
                .values(cancel_requested=True)
            )
            status = connection.execute(
                select(jobs.c.status).where(jobs.c.id == job_id)
            ).scalar()
            self._notify_on(connection, CHANGE_CHANNEL)
        self._changes.ring()

        return status

    def purge(
        self,
        finished_before: float,
        *,
        tasks: Sequence[str] | None = None,
        other_than: Sequence[str] = (),
    ) -> int:
        doomed = select(jobs.c.id).where(
            jobs.c.finished_at.is_not(None),
            jobs.c.finished_at < finished_before,
            jobs.c.status.in_(FINISHED_STATUSES),
        )
        if tasks is not None:
            doomed = doomed.where(jobs.c.task.in_(tasks))
        if other_than:
            doomed = doomed.where(jobs.c.task.not_in(other_than))

        # In slices, so that no single transaction holds the write lock for
        # long while millions of old jobs go.
        deleted = 0
        while True:
            with self._write() as connection:
                chunk = doomed.limit(PURGE_SLICE).scalar_subquery()
                count = connection.execute(
                    delete(jobs).where(jobs.c.id.in_(chunk))
                ).rowcount
            deleted += count
            if count < PURGE_SLICE:
                return deleted

    def sync_schedule(self, name: str, spec: str, next_run_at: float) -> float:
        with self._write() as connection:
            row = connection.execute(
                select(schedules.c.spec, schedules.c.next_run_at).where(
                    schedules.c.name == name
                )
            ).first()
            if row is None:
                connection.execute(
                    insert(schedules).values(
                        name=name, spec=spec, next_run_at=next_run_at
                    )
                )
            elif row.spec != spec:
                connection.execute(
                    update(schedules)
                    .where(schedules.c.name == name)
                    .values(spec=spec, next_run_at=next_run_at)
                )
            else:
                return float(row.next_run_at)

        return next_run_at

    def fire_schedule(
        self, name: str, due_at: float, next_run_at: float, job: JobRecord
    ) -> bool:
        with self._write() as connection:
            moved = connection.execute(
                update(schedules)
                .where(schedules.c.name == name, schedules.c.next_run_at == due_at)
                .values(next_run_at=next_run_at)
            ).rowcount
            if moved:
                connection.execute(insert(jobs).values(_as_row(job)))
                self._notify_on(connection)
        if moved:
            self._work.ring()
            self._changes.ring()

        return bool(moved)

    def list_schedules(self) -> list[tuple[str, str, float]]:
        with self._read() as connection:
            rows = connection.execute(
                select(
                    schedules.c.name, schedules.c.spec, schedules.c.next_run_at
                ).order_by(schedules.c.name)
            ).all()

        return [(row.name, row.spec, float(row.next_run_at)) for row in rows]

    def wait_for_work(self, timeout: float) -> None:
        self._wait(self._work, timeout, self._has_ready_work)

    def wait_for_job(
        self,
        worker: str,
        queues: Sequence[str] | None,
        lease: float,
        timeout: float,
    ) -> JobRecord | None:
        """On PostgreSQL, an enqueue's NOTIFY carries the new job's id when
        a claim of that one row may start it; the waiting thread claims it
        by id, one statement instead of a whole claim. Several processes
        may try: one wins, the others go back to claiming as usual."""
        if not self.is_postgres:
            return super().wait_for_job(worker, queues, lease, timeout)

        self._wait(self._work, timeout, self._has_ready_work)
        job_id = self._events().take_offer(queues, self.queue_limits)
        if job_id is None:
            return None

        now = self.clock()
        take = self._prepared("take-offered", lambda: _TAKE_OFFERED)
        values = {
            "b_id": job_id,
            "b_now": now,
            "b_worker": worker,
            "b_lease_expires_at": now + lease,
        }
        with self._autocommit_cursor() as cursor:
            row = take.execute(cursor, values).fetchone()
        if row is None:
            return None
        self._changes.ring()

        return _as_record(row)

    def wait_for_change(self, timeout: float) -> None:
        self._wait(self._changes, timeout, lambda: True)

    def _wait(self, bell: Bell, timeout: float, worth_waking: Any) -> None:
        """Wait on this process's bell. On SQLite, between rings, look for
        commits made by other processes every ``poll_interval`` seconds; on
        PostgreSQL a listening thread turns every process's NOTIFY into a
        ring, so the bell is all there is to wait on."""
        deadline = time.monotonic() + timeout
        if self.is_postgres:
            self._events().ensure_running()
            bell.wait(timeout)
            return

        while True:
            remaining = max(0.0, deadline - time.monotonic())
            if bell.wait(min(self.poll_interval, remaining)):
                return
            if self._changed_elsewhere() and worth_waking():
                return
            if time.monotonic() >= deadline:
                return

    def _changed_elsewhere(self) -> bool:
        """Whether another connection committed since the last call."""
        if not self.is_sqlite:
            return True

        with self._watch_lock:
            if self._watch_connection is None:
                self._watch_connection = self.engine.connect()
            version = self._watch_connection.exec_driver_sql(
                "PRAGMA data_version"
            ).scalar()
            self._watch_connection.rollback()
            changed = (
                self._watched_version is not None and version != self._watched_version
            )
            self._watched_version = version

        return changed

    def _events(self) -> NotifyListener:
        with self._watch_lock:
            if self._listener is None:
                self._listener = NotifyListener(
                    self.engine.url, self._work, self._changes
                )

            return self._listener

    def _has_ready_work(self) -> bool:
        with self._read() as connection:
            now = self.clock()
            row = connection.execute(
                select(jobs.c.id)
                .where(or_(_IS_QUEUED, _IS_SCHEDULED), jobs.c.run_at <= now)
                .limit(1)
            ).first()

        return row is not None

    def _claim(
        self,
        cursor: Any,
        worker: str,
        queues: Sequence[str] | None,
        limit: int,
        lease: float,
    ) -> list[JobRecord]:
        """Claim inside the caller's write transaction: queue the scheduled
        jobs that are due, count the running jobs, read the first ready jobs
        that no saturated limit excludes (queue by queue, in the order given),
        and mark those the limits admit as running."""
        now = self.clock()
        if self.is_postgres:
            # Claims take turns, so that each counts the running jobs after
            # the one before it committed; a claim lasts milliseconds.
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (CLAIM_LOCK_KEY,))
        due = self._prepared("due", lambda: _PROMOTE_DUE)
        due.execute(cursor, {"b_now": now})
        running = self._prepared("running", lambda: _RUNNING)
        admission = Admission(self.queue_limits, running.execute(cursor, {}))
        full_queues = _padded(admission.saturated_queues())
        full_keys = _padded(admission.saturated_keys())

        chosen: list[str] = []
        lanes: list[list[str] | None] = (
            [None] if queues is None else [[queue] for queue in queues]
        )
        for lane in lanes:
            if len(chosen) == limit:
                break
            key = ("ready", _tuple(lane), len(full_queues), len(full_keys))
            ready = self._prepared(
                key,
                functools.partial(
                    _ready_statement, lane, len(full_queues), len(full_keys)
                ),
            )
            values: dict[str, Any] = {"b_now": now, "b_limit": limit - len(chosen)}
            values.update(_numbered("b_queue", lane or []))
            values.update(_numbered("b_full_queue", full_queues))
            values.update(_numbered("b_full_key", full_keys))
            chosen += [
                job_id
                for job_id, queue, key, key_limit in ready.execute(cursor, values)
                if admission.admit(queue, key, key_limit)
            ]
        if not chosen:
            return []

        ids = _padded(chosen)
        start = self._prepared(("start", len(ids)), lambda: _start_statement(len(ids)))
        values = {"b_now": now, "b_worker": worker, "b_lease_expires_at": now + lease}
        values.update(_numbered("b_id", ids))
        claimed = [_as_record(row) for row in start.execute(cursor, values)]
        order = {job_id: position for position, job_id in enumerate(chosen)}
        claimed.sort(key=lambda job: order[job.id])

        return claimed

    def _finish(
        self, cursor: Any, worker: str, outcomes: Sequence[Outcome]
    ) -> list[str]:
        by_id = {outcome.job_id: outcome for outcome in outcomes}
        held = self._prepared(("held", len(by_id)), lambda: _held_statement(len(by_id)))
        values: dict[str, Any] = {"b_worker": worker}
        values.update({f"b_id_{i}": job_id for i, job_id in enumerate(by_id)})
        applied = [
            job_id
            for job_id, attempts in held.execute(cursor, values)
            if by_id[job_id].attempt == attempts
        ]

        if len(applied) < len(by_id):
            stale = sorted(set(by_id) - set(applied))
            logger.warning(
                "Dropped the outcome of %d job(s) whose lease this worker no "
                "longer holds (a newer attempt owns them): %s",
                len(stale),
                ", ".join(stale),
                extra={"action": "stale_outcome", "worker": worker},
            )
        if applied:
            finish = self._prepared("finish", lambda: _FINISH)
            finish.execute_many(
                cursor,
                [
                    {
                        "b_id": job_id,
                        "b_status": by_id[job_id].status,
                        "b_finished_at": (
                            None
                            if by_id[job_id].retry_at is not None
                            else by_id[job_id].finished_at
                        ),
                        "b_result": by_id[job_id].result,
                        "b_error": by_id[job_id].error,
                        "b_progress": by_id[job_id].progress,
                        "b_retry_at": by_id[job_id].retry_at,
                        "b_attempt_errors": by_id[job_id].attempt_errors,
                        "b_log": by_id[job_id].log,
                    }
                    for job_id in applied
                ],
            )

        return applied

    def _prepared(self, key: Hashable, build: Callable[[], ClauseElement]) -> _Prepared:
        prepared = self._statements.get(key)
        if prepared is None:
            prepared = _Prepared(build(), self.engine.dialect)
            if len(self._statements) < MAX_PREPARED:
                self._statements[key] = prepared

        return prepared

    @contextmanager
    def _write_cursor(self, *, relaxed: bool = False) -> Iterator[Any]:
        """A DBAPI cursor in a transaction that holds the write lock, for the
        paths every job takes; see :class:`_Prepared`.

        ``relaxed`` transactions (claims and outcomes) do not wait for the
        disk on PostgreSQL: if the server loses one in a crash, the job is
        claimed or run again, which at-least-once delivery allows. Enqueues
        always wait, so a job whose enqueue returned is never lost."""
        # The connection is taken before the lock: the other order could
        # wait for the lock while holding the pool's last connection.
        connection = self.engine.raw_connection()
        try:
            cursor = connection.cursor()
            with self.write_lock or nullcontext():
                if self.is_sqlite:
                    cursor.execute("BEGIN IMMEDIATE")
                elif relaxed and self.is_postgres:
                    cursor.execute("SET LOCAL synchronous_commit = off")
                try:
                    yield cursor
                except BaseException:
                    connection.rollback()
                    raise
                if self.is_sqlite:
                    cursor.execute("COMMIT")
                else:
                    connection.commit()
            cursor.close()
        finally:
            connection.close()

    @contextmanager
    def _read_cursor(self) -> Iterator[Any]:
        connection = self.engine.raw_connection()
        try:
            cursor = connection.cursor()
            yield cursor
            cursor.close()
            connection.rollback()
        finally:
            connection.close()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A connection in a transaction that holds the write lock."""
        with self.engine.connect() as connection:
            if self.is_sqlite:
                with self.write_lock or nullcontext():
                    connection.exec_driver_sql("BEGIN IMMEDIATE")
                    try:
                        yield connection
                    except BaseException:
                        connection.exec_driver_sql("ROLLBACK")
                        raise
                    connection.exec_driver_sql("COMMIT")
            else:
                with connection.begin():
                    yield connection

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as connection:
            if self.is_sqlite:
                yield connection
            else:
                with connection.begin():
                    yield connection

    def _create_engine(self, url: str) -> Engine:
        parsed = make_url(url)
        if parsed.get_backend_name() == "postgresql":
            # psycopg 3, whatever driver the URL names or leaves out.
            return create_engine(parsed.set(drivername="postgresql+psycopg"))
        if parsed.get_backend_name() != "sqlite":
            return create_engine(url)

        engine = create_engine(
            url,
            connect_args={"timeout": self._busy_timeout, "check_same_thread": False},
        )
        synchronous = self._synchronous

        @event.listens_for(engine, "connect")
        def configure(dbapi_connection: Any, _record: Any) -> None:
            # Autocommit at the driver level: this store issues BEGIN itself,
            # so that it can choose BEGIN IMMEDIATE for writes.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.close()

        return engine


MAX_PREPARED = 256
#: PostgreSQL advisory lock keys: claims take turns on one, migrations on
#: the other. Arbitrary numbers, unlikely to meet an application's own.
CLAIM_LOCK_KEY = 0x0FF10AD1
MIGRATION_LOCK_KEY = 0x0FF10AD2
PURGE_SLICE = 1000
