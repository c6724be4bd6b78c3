"""The Redis store's functions, loaded into the server as one library."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from flask_offload.records import QUEUED
from flask_offload.stores.base import ListFilter
from flask_offload.stores.redis import RedisStore
from flask_offload.stores.redis_scripts import LIBRARY_NAME
from tests.conftest import FakeClock
from tests.stores.conftest import delete_redis_keys, fresh_redis_store
from tests.stores.test_conformance import make_job


@pytest.fixture
def redis_store(clock: FakeClock) -> Iterator[RedisStore]:
    store = fresh_redis_store(clock)
    assert isinstance(store, RedisStore)
    store.open()
    yield store
    store.close()
    delete_redis_keys(store)


def library_names(url: str) -> list[str]:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        # Each library comes as a flat list of names and values.
        return [
            dict(zip(entry[::2], entry[1::2], strict=True))["library_name"]
            for entry in client.function_list()
        ]
    finally:
        client.close()


def test_the_first_call_loads_the_library_into_the_server(
    redis_store: RedisStore,
) -> None:
    make_job(redis_store)

    assert LIBRARY_NAME in library_names(redis_store.url)


def test_a_store_loads_the_library_again_once_the_server_forgot_it(
    redis_store: RedisStore,
) -> None:
    first = make_job(redis_store)
    # What a restart without persistence, or FUNCTION FLUSH, does.
    client = redis.Redis.from_url(redis_store.url)
    client.function_delete(LIBRARY_NAME)
    client.close()

    second = make_job(redis_store)

    assert LIBRARY_NAME in library_names(redis_store.url)
    listed = [job.id for job in redis_store.list_jobs(ListFilter(status=QUEUED))]
    assert sorted(listed) == sorted([first.id, second.id])
