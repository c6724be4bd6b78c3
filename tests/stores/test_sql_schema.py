from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, create_engine, inspect

from flask_offload.records import Outcome
from flask_offload.stores import SQLStore
from flask_offload.stores.sql_schema import (
    CURRENT_VERSION,
    MIGRATIONS,
    installed_version,
    meta,
    metadata,
    migrate,
)
from tests.stores.conftest import fresh_postgres_database


def describe(url: str) -> dict[str, Any]:
    """Tables, columns and indexes as the database reports them."""
    inspector = inspect(create_engine(url))
    described = {}
    for table in sorted(inspector.get_table_names()):
        columns = [
            (c["name"], str(c["type"]), c["nullable"])
            for c in inspector.get_columns(table)
        ]
        indexes = sorted(
            (i["name"], tuple(i["column_names"])) for i in inspector.get_indexes(table)
        )
        described[table] = {"columns": columns, "indexes": indexes}

    return described


def test_the_migrations_build_exactly_the_schema_the_metadata_describes(
    tmp_path: Path,
) -> None:
    migrated = f"sqlite:///{tmp_path / 'migrated.sqlite3'}"
    declared = f"sqlite:///{tmp_path / 'declared.sqlite3'}"
    with create_engine(migrated).begin() as connection:
        migrate(connection)
    metadata.create_all(create_engine(declared))

    assert describe(migrated) == describe(declared)


def test_opening_a_new_file_records_the_current_schema_version(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'offload.sqlite3'}"
    store = SQLStore(url)
    store.open()
    store.close()

    with create_engine(url).connect() as connection:
        assert installed_version(connection) == CURRENT_VERSION


def test_opening_an_existing_file_twice_migrates_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'offload.sqlite3'}"
    for _ in range(2):
        store = SQLStore(url)
        store.open()
        store.close()

    with create_engine(url).begin() as connection:
        assert migrate(connection) == CURRENT_VERSION


def test_a_file_from_a_newer_release_is_refused_with_a_clear_message(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'offload.sqlite3'}"
    with create_engine(url).begin() as connection:
        migrate(connection)
        connection.execute(meta.update().values(value=str(CURRENT_VERSION + 1)))

    store = SQLStore(url)
    with pytest.raises(RuntimeError, match="newer than this release knows"):
        store.open()
    store.close()


def test_a_version_1_file_with_jobs_is_upgraded_in_place_keeping_them(
    tmp_path: Path,
) -> None:
    old = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    declared = f"sqlite:///{tmp_path / 'declared.sqlite3'}"
    with create_engine(old).begin() as connection:
        MIGRATIONS[0](connection)
        connection.execute(meta.insert().values(key="schema_version", value="1"))
        connection.exec_driver_sql(
            "INSERT INTO offload_jobs (id, task, queue, priority, status, "
            "arguments, enqueued_at, run_at, attempts, recoveries, "
            "cancel_requested) VALUES ('j1', 'tasks.old', 'default', 0, "
            "'queued', '{\"args\":[],\"kwargs\":{}}', 1.0, 1.0, 0, 0, 0)"
        )

    store = SQLStore(old)
    store.open()
    job = store.get("j1")
    claimed = store.claim("w1", None, 10, 30)
    store.close()
    metadata.create_all(create_engine(declared))

    assert job is not None
    assert (job.task, job.concurrency_key, job.concurrency_limit) == (
        "tasks.old",
        None,
        None,
    )
    assert [c.id for c in claimed] == ["j1"]
    assert describe(old) == describe(declared)


def build_version_3(connection: Connection) -> None:
    """The tables as release 3 of the schema left them, recorded as such."""
    for step in MIGRATIONS[:3]:
        step(connection)
    connection.execute(meta.insert().values(key="schema_version", value="3"))


def test_a_version_3_file_with_jobs_gains_job_logs_in_place(tmp_path: Path) -> None:
    old = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    declared = f"sqlite:///{tmp_path / 'declared.sqlite3'}"
    with create_engine(old).begin() as connection:
        build_version_3(connection)
        connection.exec_driver_sql(
            "INSERT INTO offload_jobs (id, task, queue, priority, status, "
            "arguments, enqueued_at, run_at, finished_at, attempts, recoveries, "
            "cancel_requested, result) VALUES ('j0', 'tasks.old', 'default', 0, "
            "'succeeded', '{\"args\":[],\"kwargs\":{}}', 1.0, 1.0, 2.0, 1, 0, "
            "0, '1'), ('j1', 'tasks.old', 'default', 0, 'queued', "
            '\'{"args":[],"kwargs":{}}\', 1.0, 1.0, NULL, 0, 0, 0, NULL)'
        )

    store = SQLStore(old)
    store.open()
    finished = store.get("j0")
    (claimed,) = store.claim("w1", None, 10, 30)
    outcome = Outcome("j1", claimed.attempts, "succeeded", 3.0, log="[attempt 1] hi")
    store.finish("w1", [outcome])
    logged = store.get("j1")
    store.close()
    metadata.create_all(create_engine(declared))

    assert finished is not None and (finished.result, finished.log) == ("1", None)
    assert logged is not None and logged.log == "[attempt 1] hi"
    assert describe(old) == describe(declared)
    with create_engine(old).connect() as connection:
        assert installed_version(connection) == CURRENT_VERSION == 4


def test_a_version_3_postgresql_database_gains_job_logs_in_place() -> None:
    url = fresh_postgres_database()
    engine = create_engine(url)
    with engine.begin() as connection:
        build_version_3(connection)
        connection.exec_driver_sql(
            "INSERT INTO offload_jobs (id, task, queue, priority, status, "
            "arguments, enqueued_at, run_at, attempts, recoveries, "
            "cancel_requested) VALUES ('j1', 'tasks.old', 'default', 0, "
            "'queued', '{\"args\":[],\"kwargs\":{}}', 1.0, 1.0, 0, 0, false)"
        )

    store = SQLStore(url)
    store.open()
    (claimed,) = store.claim("w1", None, 10, 30)
    store.finish("w1", [Outcome("j1", claimed.attempts, "succeeded", 3.0, log="hi")])
    logged = store.get("j1")
    store.close()
    inspector = inspect(engine)
    columns = {column["name"] for column in inspector.get_columns("offload_jobs")}
    indexes = {index["name"] for index in inspector.get_indexes("offload_jobs")}
    with engine.connect() as connection:
        version = installed_version(connection)
    engine.dispose()

    assert logged is not None and logged.log == "hi"
    assert columns == {column.name for column in metadata.tables["offload_jobs"].c}
    assert indexes == {index.name for index in metadata.tables["offload_jobs"].indexes}
    assert version == CURRENT_VERSION


def test_a_postgresql_claim_finds_its_jobs_without_the_index_of_ready_jobs() -> None:
    """A burst of jobs in a table whose statistics are older than it: the
    planner believes the index of ready jobs holds a row or two, and a claim
    that let it read the chosen ids from there read every queued job."""
    from flask_offload.stores.sql_statements import _Prepared, _start_statement
    from tests.stores.test_conformance import make_job

    store = SQLStore(fresh_postgres_database())
    store.open()
    try:
        ids = [make_job(store).id for _ in range(3000)][:128]
        start = _Prepared(_start_statement(len(ids)), store.engine.dialect)
        values = {"b_now": 0.0, "b_worker": "w1", "b_lease_expires_at": 30.0}
        values.update({f"b_id_{i}": job_id for i, job_id in enumerate(ids)})
        with store.engine.connect() as connection:
            cursor = connection.connection.cursor()
            cursor.execute("EXPLAIN " + start.sql, start.parameters(values))
            plan = "\n".join(row[0] for row in cursor.fetchall())
            connection.rollback()
    finally:
        store.close()

    assert "ix_offload_jobs_ready" not in plan, plan
