"""Idle worker threads and the jobs handed to them while they wait.

Every store must wake a waiting thread for a job enqueued meanwhile; the
Redis store goes further and hands the job over already claimed, which the
tests of the second part check across two store objects, as two processes
would have.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest

from flask_offload.records import QUEUED, RUNNING, SUCCEEDED, JobRecord, Outcome
from flask_offload.stores import ListFilter, Store
from tests.conftest import FakeClock
from tests.stores.conftest import delete_redis_keys, fresh_redis_store
from tests.stores.test_conformance import LEASE, make_job, succeeded

#: Long enough that a waiter still blocked at the end was never woken.
WAIT = 5.0


class Waiter:
    """One thread blocked in ``wait_for_job``, as an idle worker thread."""

    def __init__(
        self,
        store: Store,
        worker: str,
        queues: list[str] | None = None,
        *,
        until_handed: bool = False,
        wait_for: float = WAIT,
    ) -> None:
        """``until_handed`` waits again after a wake-up without a job, as a
        worker thread does (after a claim of its own), until ``WAIT``."""
        self.returned: list[JobRecord | None] = []
        self.took = 0.0

        def wait() -> None:
            started = time.monotonic()
            record = store.wait_for_job(worker, queues, LEASE, wait_for)
            while record is None and until_handed:
                remaining = wait_for - (time.monotonic() - started)
                if remaining <= 0:
                    break
                record = store.wait_for_job(worker, queues, LEASE, remaining)
            self.returned.append(record)
            self.took = time.monotonic() - started

        self.thread = threading.Thread(target=wait, daemon=True)
        self.thread.start()
        # Give the thread time to register before the test acts.
        time.sleep(0.2)

    def result(self) -> JobRecord | None:
        self.thread.join(WAIT + 2)
        assert not self.thread.is_alive()

        return self.returned[0]


def test_a_job_enqueued_while_a_thread_waits_wakes_it(store: Store) -> None:
    waiter = Waiter(store, "w1")

    job = make_job(store)
    handed = waiter.result()

    assert waiter.took < WAIT / 2
    if handed is None:
        # A store that only wakes the thread: its claim finds the job.
        claimed = store.claim("w1", None, 1, LEASE)
        assert [record.id for record in claimed] == [job.id]
    else:
        assert handed.id == job.id
    stored = store.get(job.id)
    assert stored is not None
    assert (stored.status, stored.worker, stored.attempts) == (RUNNING, "w1", 1)


def test_wake_waiters_ends_a_wait_at_once(store: Store) -> None:
    waiter = Waiter(store, "w1")

    store.wake_waiters()

    assert waiter.result() is None
    assert waiter.took < WAIT / 2


def register_dead_thread(store: Store, *, lasting: float) -> None:
    """Register thread "dead:1" of worker "dead" as idle for ``lasting``
    seconds, as a thread does before its process dies."""
    from flask_offload.stores.redis import RedisStore

    assert isinstance(store, RedisStore)
    now = store.clock()
    registration = {
        "inbox": "dead:1",
        "worker": "dead",
        "queues": "",
        "lease": "30.0",
        "expires": repr(now + lasting),
    }
    store._run("wait", now, "dead", "", "{}", repr(now + 30), json.dumps(registration))


def assert_handed(handed: JobRecord | None, job: JobRecord, worker: Store) -> None:
    """``handed`` is ``job``, started for worker w1 with a fresh lease."""
    assert handed is not None
    assert (handed.id, handed.status, handed.worker) == (job.id, RUNNING, "w1")
    assert handed.attempts == 1
    assert handed.lease_expires_at == pytest.approx(worker.clock() + LEASE)


@pytest.fixture
def two_redis_stores(clock: FakeClock) -> Iterator[tuple[Store, Store]]:
    """Two Redis store objects on the same keys: a worker's and a web
    process's."""
    from flask_offload.stores.redis import RedisStore

    worker = fresh_redis_store(clock)
    assert isinstance(worker, RedisStore)
    web = RedisStore(worker.url, clock=clock, prefix=worker.prefix)
    worker.open()
    web.open()
    yield worker, web
    web.close()
    worker.close()
    delete_redis_keys(worker)


def test_redis_hands_a_job_to_a_thread_of_another_process_claimed(
    two_redis_stores: tuple[Store, Store],
) -> None:
    worker, web = two_redis_stores
    waiter = Waiter(worker, "w1")

    job = make_job(web)
    handed = waiter.result()

    assert_handed(handed, job, worker)
    assert worker.counts()["default"][RUNNING] == 1


def test_redis_counts_and_lists_a_job_handed_straight_at_once_and_once_it_ends(
    two_redis_stores: tuple[Store, Store],
) -> None:
    worker, web = two_redis_stores
    waiter = Waiter(worker, "w1")

    job = make_job(web, task="tasks.handed")
    handed = waiter.result()

    assert handed is not None and handed.id == job.id
    assert web.counts()["default"][RUNNING] == 1
    for where in (
        ListFilter(),
        ListFilter(status=RUNNING),
        ListFilter(queue="default"),
        ListFilter(task="tasks.handed"),
    ):
        assert [record.id for record in web.list_jobs(where)] == [job.id]
    assert worker.finish("w1", [succeeded(handed)]) == [job.id]
    counts = web.counts()["default"]
    assert (counts[QUEUED], counts[RUNNING], counts[SUCCEEDED]) == (0, 0, 1)
    assert web.list_jobs(ListFilter(status=RUNNING)) == []
    finished = web.list_jobs(ListFilter(status=SUCCEEDED))
    assert [record.id for record in finished] == [job.id]


def test_redis_hands_no_job_of_a_queue_the_thread_does_not_serve(
    two_redis_stores: tuple[Store, Store],
) -> None:
    worker, web = two_redis_stores
    waiter = Waiter(worker, "w1", queues=["mail"])

    job = make_job(web, queue="reports")
    mail = make_job(web, queue="mail")
    handed = waiter.result()

    assert handed is not None and handed.id == mail.id
    stored = worker.get(job.id)
    assert stored is not None and stored.status == "queued"


def test_redis_hands_no_job_whose_key_is_busy_and_wakes_when_it_frees(
    two_redis_stores: tuple[Store, Store],
) -> None:
    worker, web = two_redis_stores
    first = make_job(web, key="account-7")
    [running] = web.claim("w2", None, 1, LEASE)
    assert running.id == first.id
    waiter = Waiter(worker, "w1")

    second = make_job(web, key="account-7")
    time.sleep(0.3)
    assert waiter.thread.is_alive(), "a job whose key is busy was handed over"
    web.finish("w2", [Outcome(first.id, first.attempts + 1, SUCCEEDED, web.clock())])
    handed = waiter.result()

    assert handed is None
    assert waiter.took < WAIT / 2
    assert [job.id for job in worker.claim("w1", None, 1, LEASE)] == [second.id]


def test_redis_hands_nothing_to_a_registration_that_expired(
    two_redis_stores: tuple[Store, Store], clock: FakeClock
) -> None:
    worker, web = two_redis_stores
    # A thread that registered and then died with its process.
    register_dead_thread(worker, lasting=2)
    clock.advance(5)

    job = make_job(web)

    stored = web.get(job.id)
    assert stored is not None and stored.status == "queued"
    [claimed] = web.claim("w1", None, 1, LEASE)
    assert claimed.id == job.id


def test_redis_recovers_a_job_handed_to_a_thread_that_died_and_empties_its_inbox(
    two_redis_stores: tuple[Store, Store], clock: FakeClock
) -> None:
    import redis

    from flask_offload.stores.redis import RedisStore

    worker, web = two_redis_stores
    assert isinstance(worker, RedisStore)
    # A thread that registered, was handed a job, and died before taking it.
    register_dead_thread(worker, lasting=60)
    job = make_job(web)
    handed = web.get(job.id)
    assert handed is not None and (handed.status, handed.worker) == (RUNNING, "dead")
    client = redis.Redis.from_url(worker.url)
    inbox = worker.prefix + "inbox:dead:1"
    assert client.llen(inbox) == 1

    clock.advance(31)
    [recovered] = web.recover(3)

    assert recovered.id == job.id
    stored = web.get(job.id)
    assert stored is not None and stored.status == "queued"
    assert client.exists(inbox) == 0
    counts = web.counts()["default"]
    assert (counts[QUEUED], counts[RUNNING]) == (1, 0)
    queued = web.list_jobs(ListFilter(status=QUEUED))
    assert [record.id for record in queued] == [job.id]
    client.close()


def test_redis_wakes_a_thread_registered_by_an_older_version_and_keeps_the_job(
    two_redis_stores: tuple[Store, Store],
) -> None:
    import redis

    from flask_offload.stores.redis import RedisStore

    worker, web = two_redis_stores
    assert isinstance(worker, RedisStore)
    # Before registrations were JSON, one was its inbox's name alone.
    client = redis.Redis.from_url(worker.url, decode_responses=True)
    client.zadd(worker.prefix + "idle", {"old:1": worker.clock()})

    job = make_job(web)

    stored = web.get(job.id)
    assert stored is not None and stored.status == "queued"
    assert client.lrange(worker.prefix + "inbox:old:1", 0, -1) == [""]
    assert client.zcard(worker.prefix + "idle") == 0
    client.close()


def test_redis_wakes_a_thread_whose_clock_is_behind_instead_of_skipping_it(
    two_redis_stores: tuple[Store, Store], clock: FakeClock
) -> None:
    from flask_offload.stores.redis import RedisStore

    worker, _ = two_redis_stores
    assert isinstance(worker, RedisStore)
    # The web process's clock runs ten seconds ahead of the worker's, so
    # the worker's registration looks expired to it.
    ahead = FakeClock(clock() + 10)
    web = RedisStore(worker.url, clock=ahead, prefix=worker.prefix)
    waiter = Waiter(worker, "w1")

    job = make_job(web)
    web.close()

    assert waiter.result() is None
    assert waiter.took < WAIT / 2
    [claimed] = worker.claim("w1", None, 1, LEASE)
    assert claimed.id == job.id


def test_redis_wake_waiters_leaves_no_registration_behind(
    two_redis_stores: tuple[Store, Store],
) -> None:
    worker, web = two_redis_stores
    waiter = Waiter(worker, "w1")

    worker.wake_waiters()
    assert waiter.result() is None
    job = make_job(web)

    stored = web.get(job.id)
    assert stored is not None and stored.status == "queued"


@pytest.fixture
def two_postgres_stores(clock: FakeClock) -> Iterator[tuple[Store, Store]]:
    """Two SQL stores on one PostgreSQL database: a worker's and a web
    process's."""
    from flask_offload.stores import SQLStore
    from tests.stores.conftest import fresh_postgres_database

    url = fresh_postgres_database()
    worker = SQLStore(url, clock=clock)
    web = SQLStore(url, clock=clock)
    worker.open()
    web.open()
    yield worker, web
    web.close()
    worker.close()


def test_postgres_hands_a_job_to_a_thread_of_another_process_claimed(
    two_postgres_stores: tuple[Store, Store],
) -> None:
    worker, web = two_postgres_stores
    waiter = Waiter(worker, "w1", until_handed=True)

    job = make_job(web)
    handed = waiter.result()

    assert_handed(handed, job, worker)


def test_postgres_offers_no_job_with_a_concurrency_key(
    two_postgres_stores: tuple[Store, Store],
) -> None:
    worker, web = two_postgres_stores
    waiter = Waiter(worker, "w1")

    job = make_job(web, key="account-7")

    assert waiter.result() is None
    assert waiter.took < WAIT / 2
    stored = web.get(job.id)
    assert stored is not None and stored.status == "queued"
    assert [record.id for record in worker.claim("w1", None, 1, LEASE)] == [job.id]


def test_postgres_one_of_two_waiting_processes_takes_the_offered_job(
    two_postgres_stores: tuple[Store, Store], clock: FakeClock
) -> None:
    from flask_offload.stores import SQLStore

    worker, web = two_postgres_stores
    assert isinstance(worker, SQLStore)
    other = SQLStore(worker.engine.url.render_as_string(False), clock=clock)
    other.open()
    try:
        waiters = [
            Waiter(worker, "w1", until_handed=True, wait_for=1.5),
            Waiter(other, "w2", until_handed=True, wait_for=1.5),
        ]

        job = make_job(web)
        results = [waiter.result() for waiter in waiters]
    finally:
        other.close()

    taken = [record for record in results if record is not None]
    assert [record.id for record in taken] == [job.id]
    stored = web.get(job.id)
    assert stored is not None
    assert (stored.status, stored.worker, stored.attempts) == (
        RUNNING,
        taken[0].worker,
        1,
    )
