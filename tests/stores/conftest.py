"""Every store, for the conformance suite. A later store joins by adding a
parameter here; the suite then runs against it unchanged."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from flask_offload.stores import MemoryStore, SQLStore, Store
from tests.conftest import FakeClock
from tests.services import postgres_url, redis_url


def fresh_postgres_database() -> str:
    """The URL of the test database, emptied of Flask-Offload's tables, so
    that each test starts from nothing, as with a new SQLite file."""
    url = postgres_url()
    engine = create_engine(url)
    with engine.begin() as connection:
        for table in ("offload_jobs", "offload_meta", "offload_schedules"):
            connection.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
    engine.dispose()

    return url


@pytest.fixture(params=["memory", "sqlite", "postgres", "redis"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> Iterator[Store]:
    made: Store
    if request.param == "memory":
        made = MemoryStore(clock=clock)
    elif request.param == "postgres":
        made = SQLStore(fresh_postgres_database(), clock=clock, poll_interval=0.05)
    elif request.param == "redis":
        made = fresh_redis_store(clock)
    else:
        made = SQLStore(f"sqlite:///{tmp_path / 'offload.sqlite3'}", clock=clock)
    made.open()
    yield made
    made.close()
    if request.param == "redis":
        delete_redis_keys(made)


def fresh_redis_store(clock: FakeClock) -> Store:
    """A Redis store under a prefix of its own, so tests never meet."""
    url = redis_url()
    from flask_offload.stores.redis import RedisStore

    return RedisStore(url, clock=clock, prefix=f"test:{uuid.uuid4().hex}:")


def delete_redis_keys(store: Store) -> None:
    """Delete every key the test's Redis store made."""
    import redis

    from flask_offload.stores.redis import RedisStore

    assert isinstance(store, RedisStore)
    client = redis.Redis.from_url(store.url)
    keys = list(client.scan_iter(match=f"{store.prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()
