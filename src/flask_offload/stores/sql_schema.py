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
    select,
)

metadata = MetaData()

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
    Index("ix_offload_jobs_lease", "status", "lease_expires_at"),
    Index("ix_offload_jobs_queue_status", "queue", "status"),
)
# A claim reads this index in its own order (best priority, then oldest run
# time) and stops at its limit, instead of sorting every queued job.
Index(
    "ix_offload_jobs_ready",
    jobs.c.status,
    jobs.c.priority.desc(),
    jobs.c.run_at,
    jobs.c.id,
)

meta = Table(
    "offload_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(255), nullable=False),
)

SCHEMA_VERSION_KEY = "schema_version"


def _create_version_1(connection: Connection) -> None:
    """The first schema: the jobs table and the meta table."""
    v1 = MetaData()
    Table(
        "offload_meta",
        v1,
        Column("key", String(64), primary_key=True),
        Column("value", String(255), nullable=False),
    )
    v1_jobs = Table(
        "offload_jobs",
        v1,
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
        Index("ix_offload_jobs_lease", "status", "lease_expires_at"),
        Index("ix_offload_jobs_queue_status", "queue", "status"),
    )
    Index(
        "ix_offload_jobs_ready",
        v1_jobs.c.status,
        v1_jobs.c.priority.desc(),
        v1_jobs.c.run_at,
        v1_jobs.c.id,
    )
    v1.create_all(connection)


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
