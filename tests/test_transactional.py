"""Transactional enqueue: a job stored in the app's own transaction exists if
and only if that transaction commits; and an engine the app already has."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import Engine, create_engine, text

from flask_offload import ConfigurationError, Offload
from tests.helpers import make_app
from tests.stores.conftest import fresh_postgres_database


class Rollback(Exception):
    pass


def app_on(
    url: str, instance: Path, engine: Engine | None = None
) -> tuple[Flask, Offload]:
    app, offload = make_app(instance, OFFLOAD_URL=url, OFFLOAD_WORKER_THREADS=0)
    offload.init_app(app, engine=engine)
    offload.task(name="tests.ship")(lambda order_id: f"shipped {order_id}")

    return app, offload


def check_enqueue_follows_the_transaction(offload: Offload, engine: Engine) -> None:
    ship = offload.tasks["tests.ship"]
    with (
        pytest.raises(Rollback),
        engine.connect() as connection,
        connection.begin(),
    ):
        connection.execute(text("INSERT INTO orders VALUES (1)"))
        ship.using(connection=connection).enqueue(1)
        raise Rollback

    assert offload.stats() == {}

    with engine.connect() as connection, connection.begin():
        connection.execute(text("INSERT INTO orders VALUES (2)"))
        job = ship.using(connection=connection).enqueue(2)

    assert offload.get_job(job.id) is not None
    assert offload.drain() == 1
    assert job.refresh().result == "shipped 2"


@pytest.fixture
def sqlite_app(tmp_path: Path) -> Iterator[tuple[Offload, Engine]]:
    url = f"sqlite:///{tmp_path / 'app.sqlite3'}"
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE orders (id INTEGER PRIMARY KEY)"))
    app, offload = app_on(url, tmp_path)
    yield offload, engine
    offload.close(app)
    engine.dispose()


def test_on_sqlite_a_job_exists_only_if_the_apps_transaction_commits(
    sqlite_app: tuple[Offload, Engine],
) -> None:
    offload, engine = sqlite_app

    check_enqueue_follows_the_transaction(offload, engine)


def test_on_postgres_a_handed_engine_holds_the_jobs_and_follows_transactions(
    tmp_path: Path,
) -> None:
    url = fresh_postgres_database()
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS orders"))
        connection.execute(text("CREATE TABLE orders (id INTEGER PRIMARY KEY)"))
    app, offload = app_on("memory://", tmp_path, engine=engine)
    try:
        assert offload.state(app).store.describe().startswith("postgresql")
        check_enqueue_follows_the_transaction(offload, engine)
    finally:
        offload.close(app)
        engine.dispose()


def test_a_sqlite_engine_cannot_be_handed_over(tmp_path: Path) -> None:
    offload = Offload()
    app = Flask("handed", instance_path=str(tmp_path))

    with pytest.raises(ConfigurationError, match="takes a PostgreSQL engine"):
        offload.init_app(app, engine=create_engine(f"sqlite:///{tmp_path}/x.db"))


def test_using_a_connection_needs_a_sqlalchemy_connection() -> None:
    offload = Offload()
    task = offload.task()(print)

    with pytest.raises(TypeError, match="connection must be a SQLAlchemy"):
        task.using(connection="not a connection")
