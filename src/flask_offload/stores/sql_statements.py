"""The SQL store's statements: Core statements compiled once per dialect
and run on the DBAPI cursor (see :class:`_Prepared`), and the conversions
between rows and :class:`~flask_offload.records.JobRecord`.

They are built from the schema in :mod:`.sql_schema`, so every engine gets
its own correct text."""

from __future__ import annotations

from collections.abc import (
    Sequence,
)
from typing import Any

from sqlalchemy import (
    Integer,
    Select,
    bindparam,
    cast,
    func,
    insert,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import BindParameter, ClauseElement, ColumnElement

from ..records import (
    FAILED,
    QUEUED,
    RUNNING,
    SCHEDULED,
    STATUSES,
    SUCCEEDED,
    JobRecord,
)
from .base import ListFilter
from .sql_schema import jobs

_COLUMNS = tuple(jobs.c)
# Written as literals, not parameters, so that SQLite can see at prepare time
# that the partial indexes on these statuses apply.
_IS_QUEUED = jobs.c.status == literal_column(f"'{QUEUED}'")
_IS_RUNNING = jobs.c.status == literal_column(f"'{RUNNING}'")
_IS_SCHEDULED = jobs.c.status == literal_column(f"'{SCHEDULED}'")
_FIELD_NAMES = tuple(column.name for column in _COLUMNS)


_FINISH = (
    update(jobs)
    .where(jobs.c.id == bindparam("b_id"))
    .values(
        status=bindparam("b_status"),
        finished_at=bindparam("b_finished_at"),
        result=bindparam("b_result"),
        error=bindparam("b_error"),
        progress=func.coalesce(bindparam("b_progress"), jobs.c.progress),
        run_at=func.coalesce(bindparam("b_retry_at"), jobs.c.run_at),
        attempt_errors=func.coalesce(
            bindparam("b_attempt_errors"), jobs.c.attempt_errors
        ),
        log=bindparam("b_log"),
        worker=None,
        lease_expires_at=None,
    )
)
# A scheduled job whose time has come is queued, in the claim's own
# transaction, so that it is claimed in priority order with the rest.
_PROMOTE_DUE = (
    update(jobs)
    .where(_IS_SCHEDULED, jobs.c.run_at <= bindparam("b_now"))
    .values(status=QUEUED)
)
# Spelled as the partial unique index is, so that SQLite uses it.
_SAME_UNIQUE_KEY = select(*_COLUMNS).where(
    jobs.c.unique_key.is_not(None),
    jobs.c.unique_key == bindparam("b_key"),
    jobs.c.status.in_(
        [literal_column(f"'{status}'") for status in (SCHEDULED, QUEUED, RUNNING)]
    ),
)


_RUNNING = select(jobs.c.queue, jobs.c.concurrency_key, jobs.c.concurrency_limit).where(
    _IS_RUNNING
)
_ADMISSION_COLUMNS = (
    jobs.c.id,
    jobs.c.queue,
    jobs.c.concurrency_key,
    jobs.c.concurrency_limit,
)


def _ready_statement(
    queues: Sequence[str] | None, full_queues: int, full_keys: int
) -> ClauseElement:
    """The first ready jobs in claim order, leaving out queues and keys that
    cannot start another job now."""
    ready = (
        select(
            jobs.c.id, jobs.c.queue, jobs.c.concurrency_key, jobs.c.concurrency_limit
        )
        .where(_IS_QUEUED, jobs.c.run_at <= bindparam("b_now"))
        .order_by(jobs.c.priority.desc(), jobs.c.run_at, jobs.c.id)
        .limit(bindparam("b_limit"))
    )
    if queues is not None:
        ready = ready.where(jobs.c.queue.in_(_binds("b_queue", len(queues))))
    if full_queues:
        ready = ready.where(jobs.c.queue.not_in(_binds("b_full_queue", full_queues)))
    if full_keys:
        ready = ready.where(
            or_(
                jobs.c.concurrency_key.is_(None),
                jobs.c.concurrency_key.not_in(_binds("b_full_key", full_keys)),
            )
        )

    return ready


#: Still queued, spelled so that no partial index can serve it. Spelled as
#: ``_IS_QUEUED``, it lets PostgreSQL find the chosen ids by scanning the
#: index of ready jobs, which its statistics, stale while a burst of jobs
#: is new, say holds a row or two: a claim then read every queued job and
#: took milliseconds a job. Without it the choice is the primary key or,
#: for a small table, a scan of it; both are measured from the table's real
#: size.
_STILL_QUEUED = func.coalesce(jobs.c.status, "") == literal_column(f"'{QUEUED}'")


#: What starting a job writes: running, for ``b_worker`` from ``b_now``
#: until ``b_lease_expires_at``, one attempt more.
_STARTED = {
    "status": RUNNING,
    "worker": bindparam("b_worker"),
    "attempts": jobs.c.attempts + 1,
    "started_at": bindparam("b_now"),
    "lease_expires_at": bindparam("b_lease_expires_at"),
}


def _start_statement(count: int) -> ClauseElement:
    return (
        update(jobs)
        .where(jobs.c.id.in_(_binds("b_id", count)), _STILL_QUEUED)
        .values(_STARTED)
        .returning(*_COLUMNS)
    )


#: PostgreSQL's enqueue of a job with no unique key: the insert and its
#: NOTIFY in one statement, so that, run outside a transaction block, it is
#: one round trip that commits (and waits for the disk) on its own.
_INSERT_AND_NOTIFY = select(
    func.pg_notify(bindparam("b_channel"), bindparam("b_offer"))
).select_from(insert(jobs).returning(jobs.c.id).cte("inserted"))

#: Claims one offered job by its id (PostgreSQL's hand-over; see
#: :meth:`SQLStore.wait_for_job`): only while it is still queued and due and
#: has no concurrency key, so no limit needs counting. Run outside a
#: transaction block, it is one round trip; ``set_config`` makes its own
#: commit not wait for the disk, as a claim's does not (SET LOCAL would be
#: a statement, and a round trip, of its own).
_TAKE_OFFERED = (
    update(jobs)
    .where(
        jobs.c.id == bindparam("b_id"),
        _IS_QUEUED,
        jobs.c.run_at <= bindparam("b_now"),
        jobs.c.concurrency_key.is_(None),
        func.set_config("synchronous_commit", "off", True).is_not(None),
    )
    .values(_STARTED)
    .returning(*_COLUMNS)
)


def _binds(prefix: str, count: int) -> list[BindParameter[Any]]:
    return [bindparam(f"{prefix}_{i}") for i in range(count)]


def _numbered(prefix: str, values: Sequence[str]) -> dict[str, str]:
    return {f"{prefix}_{i}": value for i, value in enumerate(values)}


def _padded(values: list[str]) -> list[str]:
    """``values`` lengthened to a power of two by repeating the last one, so
    that statements with an ``IN`` list come in a few sizes that are each
    compiled once, instead of one size per count."""
    if not values:
        return values

    size = 1 << (len(values) - 1).bit_length()

    return values + [values[-1]] * (size - len(values))


def _tuple(queues: Sequence[str] | None) -> tuple[str, ...] | None:
    return None if queues is None else tuple(queues)


def _list_statement(where: ListFilter) -> Select[Any]:
    """The jobs ``where`` asks for, newest first; after an ``after`` cursor,
    the closest first, for the caller to turn round. Running jobs come whole
    and unordered, for the caller to page: they are few (one per worker
    thread at most), but SQLite would rather walk the whole table in id
    order than read their partial index and sort them."""
    query = select(*_COLUMNS)
    if where.queue is not None:
        query = query.where(jobs.c.queue == where.queue)
    if where.status in STATUSES:
        # A literal, so that SQLite sees that a partial index applies.
        query = query.where(jobs.c.status == literal_column(f"'{where.status}'"))
    elif where.status is not None:
        query = query.where(jobs.c.status == where.status)
    if where.task is not None:
        query = query.where(jobs.c.task == where.task)
    if where.status == RUNNING:
        return query

    if where.before is not None:
        query = query.where(jobs.c.id < where.before)
    if where.after is not None:
        query = query.where(jobs.c.id > where.after)
    order = jobs.c.id.asc() if where.after is not None else jobs.c.id.desc()

    return query.order_by(order).limit(where.limit).offset(where.offset)


def _finished_per_minute_statement(since: int, *, postgres: bool) -> Select[Any]:
    """Jobs that succeeded or failed since ``since``, counted by minute and
    status, from the index of finished jobs by end time and status alone."""
    if postgres:
        minute: ColumnElement[Any] = func.floor(jobs.c.finished_at / 60)
    else:
        minute = cast(jobs.c.finished_at / 60, Integer)

    return (
        select(minute, jobs.c.status, func.count())
        .where(
            jobs.c.finished_at.is_not(None),
            jobs.c.finished_at >= since,
            jobs.c.status.in_([SUCCEEDED, FAILED]),
        )
        .group_by(minute, jobs.c.status)
    )


def _held_statement(count: int) -> ClauseElement:
    return select(jobs.c.id, jobs.c.attempts).where(
        jobs.c.id.in_(_binds("b_id", count)),
        _IS_RUNNING,
        jobs.c.worker == bindparam("b_worker"),
    )


class _Prepared:
    """A Core statement compiled once for the store's dialect and run on the
    DBAPI cursor.

    On the paths every job takes (enqueue, claim, finish), SQLAlchemy's
    per-execution bookkeeping costs more than SQLite's own commit: this
    halves the cost of an enqueue. The SQL still comes from the Core
    statements above, so every dialect gets its own correct text.
    """

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        self.sql = compiled.string
        self._constants = {
            name: bind.effective_value
            for name, bind in compiled.binds.items()
            if not bind.required
        }
        self._order = compiled.positiontup if compiled.positional else None

    def parameters(self, values: dict[str, Any]) -> Any:
        merged = {**self._constants, **values}
        if self._order is None:
            return merged

        return [merged[name] for name in self._order]

    def execute(self, cursor: Any, values: dict[str, Any]) -> Any:
        cursor.execute(self.sql, self.parameters(values))

        return cursor

    def execute_many(self, cursor: Any, rows: list[dict[str, Any]]) -> None:
        cursor.executemany(self.sql, [self.parameters(row) for row in rows])


def _is_unique_violation(error: Exception) -> bool:
    """Whether the database refused a row for a unique index (SQLSTATE
    23505 on PostgreSQL; SQLite's IntegrityError)."""
    code = getattr(error, "sqlstate", None) or getattr(
        getattr(error, "orig", None), "sqlstate", None
    )

    return code == "23505" or type(error).__name__ == "IntegrityError"


def _as_row(job: JobRecord) -> dict[str, Any]:
    return {name: getattr(job, name) for name in _FIELD_NAMES}


def _as_record(row: Any) -> JobRecord:
    record = JobRecord(**dict(zip(_FIELD_NAMES, row, strict=True)))
    # A DBAPI cursor gives SQLite's 0 and 1 where SQLAlchemy would give bools.
    record.cancel_requested = bool(record.cancel_requested)

    return record
