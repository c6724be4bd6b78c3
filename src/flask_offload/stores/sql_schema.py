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

from collections.abc import Callable

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
    literal_column,
    select,
)


def _define_version_1(metadata: MetaData) -> Table:
    """Add the version 1 tables to ``metadata`` and return the jobs table.

    The current schema is still version 1, so ``metadata`` below is built by
    this function too. When a release changes the schema, the current tables
    get a definition of their own and this one stays as it is, because the
    first migration step must keep building exactly version 1.
    """
    jobs = Table(
        "offload_jobs",
        metadata,
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
    running = jobs.c.status == literal_column("'running'")
    Index(
        "ix_offload_jobs_lease",
        jobs.c.lease_expires_at,
        sqlite_where=running,
        postgresql_where=running,
    )

    Table(
        "offload_meta",
        metadata,
        Column("key", String(64), primary_key=True),
        Column("value", String(255), nullable=False),
    )

    return jobs


metadata = MetaData()
jobs = _define_version_1(metadata)
meta = metadata.tables["offload_meta"]

SCHEMA_VERSION_KEY = "schema_version"


def _create_version_1(connection: Connection) -> None:
    """The first schema: the jobs table and the meta table."""
    version_1 = MetaData()
    _define_version_1(version_1)
    version_1.create_all(connection)


#: Migration steps in order; step ``n`` (1-based) brings a database from
#: version ``n - 1`` to version ``n``.
MIGRATIONS: list[Callable[[Connection], None]] = [_create_version_1]
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
