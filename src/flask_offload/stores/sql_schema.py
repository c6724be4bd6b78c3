"""The SQL schema, defined once as SQLAlchemy metadata, and its migrations.

``metadata`` describes the current schema and is what the store queries
through. ``MIGRATIONS`` builds that same schema step by step from an empty
database; a database records the number of the last step it has, in
``offload_meta``, so a later release can add a step and upgrade old files in
place. ``tests/stores/test_sql_schema.py`` checks that running every step
gives exactly ``metadata``.

A step must never change once released: write a new one instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    literal_column,
    select,
)
from sqlalchemy.schema import CreateIndex, DropIndex

UNFINISHED_STATUSES = ("scheduled", "queued", "running")


def _define(metadata: MetaData, version: int) -> Table:
    """Add the tables of schema ``version`` to ``metadata`` and return the jobs
    table. Each version is what the one before was plus its own changes, so
    that migration step ``n`` can build exactly version ``n``: never change
    what an older version defines.
    """
    columns: list[Column[Any]] = [
        Column("id", String(32), primary_key=True),
        Column("task", String(255), nullable=False),
        Column("queue", String(255), nullable=False),
        Column("priority", Integer, nullable=False),
        Column("status", String(16), nullable=False),
        Column("arguments", Text, nullable=False),
        Column("enqueued_at", Float, nullable=False),
        Column("run_at", Float, nullable=False),
        Column("started_at", Float),
        Column("finished_at", Float),
        Column("attempts", Integer, nullable=False),
        Column("recoveries", Integer, nullable=False),
        Column("worker", String(255)),
        Column("lease_expires_at", Float),
        Column("cancel_requested", Boolean, nullable=False),
        Column("result", Text),
        Column("error", Text),
        Column("progress", Text),
    ]
    if version >= 2:
        columns += _version_2_columns()
    if version >= 3:
        columns += _version_3_columns()
    if version >= 4:
        columns += _version_4_columns()

    jobs: Table = Table(
        "offload_jobs",
        metadata,
        *columns,
        Index("ix_offload_jobs_queue_status", "queue", "status"),
        # Ids are time-ordered, so on SQLite the table itself is kept in id
        # order and needs no separate index for its primary key.
        sqlite_with_rowid=False,
    )

    # Partial indexes: each holds only the jobs in one status, so it stays
    # small however many finished jobs the table keeps, and a job enters or
    # leaves it only when its status changes. A claim reads the first in its
    # own order (best priority, then oldest run time) and stops at its limit.
    queued = jobs.c.status == literal_column("'queued'")
    Index(
        "ix_offload_jobs_ready",
        jobs.c.priority.desc(),
        jobs.c.run_at,
        jobs.c.id,
        sqlite_where=queued,
        postgresql_where=queued,
    )
    if version == 1:
        running = jobs.c.status == literal_column("'running'")
        Index(
            "ix_offload_jobs_lease",
            jobs.c.lease_expires_at,
            sqlite_where=running,
            postgresql_where=running,
        )
    else:
        _running_index(jobs)
    if version >= 3:
        _version_3_indexes(jobs, version)
    if version >= 4:
        _finished_by_status_index(jobs)

    Table(
        "offload_meta",
        metadata,
        Column("key", String(64), primary_key=True),
        Column("value", String(255), nullable=False),
    )
    if version >= 3:
        _schedules_table(metadata)

    return jobs


def _schedules_table(metadata: MetaData) -> Table:
    """Since version 3: each periodic task's schedule and next run time."""
    return Table(
        "offload_schedules",
        metadata,
        Column("name", String(255), primary_key=True),
        Column("spec", String(255), nullable=False),
        Column("next_run_at", Float, nullable=False),
    )


def _version_2_columns() -> list[Column[Any]]:
    """Concurrency keys: at most ``concurrency_limit`` running jobs share a
    ``concurrency_key``."""
    return [
        Column("concurrency_key", String(255)),
        Column("concurrency_limit", Integer),
    ]


def _version_3_columns() -> list[Column[Any]]:
    """Unique jobs, the errors of earlier attempts (a JSON list), and each
    attempt's time limit in seconds."""
    return [
        Column("unique_key", String(255)),
        Column("attempt_errors", Text),
        Column("timeout", Float),
    ]


def _version_4_columns() -> list[Column[Any]]:
    """What the task logged while it ran, every attempt's lines."""
    return [Column("log", Text)]


def _finished_by_status_index(jobs: Table) -> Index:
    """Since version 4, in place of version 3's index of finished jobs by
    when they ended: the same with their status, so that the dashboard counts
    the jobs that finished in each of the last minutes from the index alone,
    and old jobs are still purged without reading the table."""
    finished = jobs.c.finished_at.is_not(None)

    return Index(
        "ix_offload_jobs_finished_status",
        jobs.c.finished_at,
        jobs.c.status,
        sqlite_where=finished,
        postgresql_where=finished,
    )


def _version_3_indexes(jobs: Table, version: int) -> list[Index]:
    """Since version 3: scheduled jobs by run time, so a claim finds the due
    ones at once; at most one waiting or running job per unique key, which
    the database itself enforces; and (until version 4 replaced it) finished
    jobs by when they ended, so that old ones are purged without reading the
    table."""
    scheduled = jobs.c.status == literal_column("'scheduled'")
    unfinished = and_(
        jobs.c.unique_key.is_not(None),
        jobs.c.status.in_(
            [literal_column(f"'{status}'") for status in UNFINISHED_STATUSES]
        ),
    )

    indexes = [
        Index(
            "ix_offload_jobs_scheduled",
            jobs.c.run_at,
            sqlite_where=scheduled,
            postgresql_where=scheduled,
        ),
        Index(
            "ix_offload_jobs_unique",
            jobs.c.unique_key,
            unique=True,
            sqlite_where=unfinished,
            postgresql_where=unfinished,
        ),
    ]
    if version == 3:
        indexes.append(
            Index(
                "ix_offload_jobs_finished",
                jobs.c.finished_at,
                sqlite_where=jobs.c.finished_at.is_not(None),
                postgresql_where=jobs.c.finished_at.is_not(None),
            )
        )

    return indexes


def _running_index(jobs: Table) -> Index:
    """Since version 2: every running job, with what a claim counts (by queue
    and by concurrency key) and what recovery looks at (the lease), so both
    read only this small index."""
    running = jobs.c.status == literal_column("'running'")

    return Index(
        "ix_offload_jobs_running",
        jobs.c.queue,
        jobs.c.concurrency_key,
        jobs.c.concurrency_limit,
        jobs.c.lease_expires_at,
        sqlite_where=running,
        postgresql_where=running,
    )


def _create_version_1(connection: Connection) -> None:
    """The first schema: the jobs table and the meta table."""
    version_1 = MetaData()
    _define(version_1, 1)
    version_1.create_all(connection)


def _add_columns(connection: Connection, columns: Iterable[Column[Any]]) -> None:
    for column in columns:
        connection.exec_driver_sql(
            f"ALTER TABLE offload_jobs ADD COLUMN {column.name} "
            f"{column.type.compile(dialect=connection.dialect)}"
        )


def _add_concurrency_keys(connection: Connection) -> None:
    """Version 2: concurrency key columns, and one index of running jobs in
    place of the lease index."""
    _add_columns(connection, _version_2_columns())

    version_1 = _define(MetaData(), 1)
    connection.execute(DropIndex(_index(version_1, "ix_offload_jobs_lease")))
    version_2 = _define(MetaData(), 2)
    connection.execute(CreateIndex(_index(version_2, "ix_offload_jobs_running")))


def _add_policies(connection: Connection) -> None:
    """Version 3: unique keys, attempt errors, and their indexes."""
    _add_columns(connection, _version_3_columns())

    version_3 = MetaData()
    _define(version_3, 3)
    version_3.tables["offload_schedules"].create(connection)
    for name in (
        "ix_offload_jobs_scheduled",
        "ix_offload_jobs_finished",
        "ix_offload_jobs_unique",
    ):
        connection.execute(CreateIndex(_index(version_3.tables["offload_jobs"], name)))


def _add_job_logs(connection: Connection) -> None:
    """Version 4: each job's log, and finished jobs indexed with their
    status."""
    _add_columns(connection, _version_4_columns())

    version_3 = _define(MetaData(), 3)
    connection.execute(DropIndex(_index(version_3, "ix_offload_jobs_finished")))
    version_4 = _define(MetaData(), 4)
    connection.execute(
        CreateIndex(_index(version_4, "ix_offload_jobs_finished_status"))
    )


def _index(table: Table, name: str) -> Index:
    return next(index for index in table.indexes if index.name == name)


metadata = MetaData()
jobs = _define(metadata, 4)
meta = metadata.tables["offload_meta"]
schedules = metadata.tables["offload_schedules"]

SCHEMA_VERSION_KEY = "schema_version"


#: Migration steps in order; step ``n`` (1-based) brings a database from
#: version ``n - 1`` to version ``n``.
MIGRATIONS: list[Callable[[Connection], None]] = [
    _create_version_1,
    _add_concurrency_keys,
    _add_policies,
    _add_job_logs,
]
CURRENT_VERSION = len(MIGRATIONS)


def installed_version(connection: Connection) -> int:
    """The schema version of the database, 0 for an empty one."""
    if not connection.dialect.has_table(connection, meta.name):
        return 0
    row = connection.execute(
        select(meta.c.value).where(meta.c.key == SCHEMA_VERSION_KEY)
    ).first()

    return 0 if row is None else int(row.value)


def migrate(connection: Connection) -> int:
    """Bring the schema up to :data:`CURRENT_VERSION` inside the caller's
    transaction. Returns the version found before.

    :raises RuntimeError: if the database was written by a newer release,
        whose schema this one does not know.
    """
    found = installed_version(connection)
    if found > CURRENT_VERSION:
        raise RuntimeError(
            f"The Flask-Offload tables have schema version {found}, newer than "
            f"this release knows ({CURRENT_VERSION}). Upgrade flask-offload "
            f"in this environment to the release that created them."
        )

    for step in MIGRATIONS[found:]:
        step(connection)

    if found < CURRENT_VERSION:
        values = {"key": SCHEMA_VERSION_KEY, "value": str(CURRENT_VERSION)}
        if found == 0:
            connection.execute(meta.insert().values(values))
        else:
            connection.execute(
                meta.update()
                .where(meta.c.key == SCHEMA_VERSION_KEY)
                .values(value=values["value"])
            )

    return found
