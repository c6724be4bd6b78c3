"""The cost of a claim as the store fills with finished jobs: one-job claims
timed with 1,000 and with 1,000,000 finished jobs kept, on SQLite,
PostgreSQL and Redis, and, beside them, Procrastinate's own claim (its
``procrastinate_fetch_job_v2`` function) on the same PostgreSQL. The
partial indexes should keep the two within a small factor.

Run: .venv/bin/python -m bench.claim_cost [--big N]
It empties and uses the benchmark's own databases (see
:mod:`bench.peers.systems`). Procrastinate is measured when it is
installed: the ``peers`` extra.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import redis
from sqlalchemy import text

from flask_offload.records import JobRecord, new_job_id
from flask_offload.stores import SQLStore
from flask_offload.stores.redis import RedisStore

CLAIMS = 500


def fill_finished(store: SQLStore, count: int) -> None:
    """Insert ``count`` succeeded jobs with one statement."""
    series = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
        f"WHERE i < {count}) SELECT i FROM n"
        if store.is_sqlite
        else f"SELECT i FROM generate_series(1, {count}) AS i"
    )
    with store.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO offload_jobs (id, task, queue, priority, status, "
                "arguments, enqueued_at, run_at, started_at, finished_at, "
                "attempts, recoveries, cancel_requested, result) "
                "SELECT 'f' || i, 'bench.done', 'default', 0, 'succeeded', "
                "'{\"args\":[],\"kwargs\":{}}', i, i, i, i, 1, 0, false, 'null' "
                f"FROM ({series}) AS series"
            )
        )


def claim_cost(store: SQLStore | RedisStore) -> float:
    """Median seconds for a one-job claim, with ``CLAIMS`` jobs queued."""
    now = time.time()
    for _ in range(CLAIMS):
        store.enqueue(
            JobRecord(
                id=new_job_id(),
                task="bench.work",
                arguments='{"args":[],"kwargs":{}}',
                enqueued_at=now,
                run_at=now,
            )
        )
    timings = []
    for _ in range(CLAIMS):
        started = time.perf_counter()
        store.claim("bench", None, 1, 30)
        timings.append(time.perf_counter() - started)

    return statistics.median(timings)


def fill_finished_redis(store: RedisStore, count: int) -> None:
    """Write ``count`` succeeded jobs the way the store keeps them, by a
    script in the server, a slice at a time."""
    client = redis.Redis.from_url(store.url)
    fill = client.register_script(FILL_REDIS)
    for first in range(0, count, 100_000):
        fill(args=[store.prefix, first, min(count, first + 100_000)])
    client.close()


FILL_REDIS = """
local P = ARGV[1]
for i = tonumber(ARGV[2]) + 1, tonumber(ARGV[3]) do
  local id = string.format('f%09d', i)
  redis.call('HSET', P .. 'job:' .. id, 'id', id, 'task', 'bench.done',
    'queue', 'default', 'priority', 0, 'status', 'succeeded',
    'arguments', '{"args":[],"kwargs":{}}', 'enqueued_at', i, 'run_at', i,
    'started_at', i, 'finished_at', i, 'attempts', 1, 'recoveries', 0,
    'cancel_requested', 0, 'result', 'null')
  redis.call('ZADD', P .. 'jobs', 0, id)
  redis.call('ZADD', P .. 'status:succeeded', 0, id)
  redis.call('ZADD', P .. 'queue:default', 0, id)
  redis.call('ZADD', P .. 'task:bench.done', 0, id)
  redis.call('ZADD', P .. 'finished', i, id)
end
redis.call('HINCRBY', P .. 'counts', 'succeeded:default',
  tonumber(ARGV[3]) - tonumber(ARGV[2]))
return 0
"""


def procrastinate_claim_cost(url: str, finished: int) -> float:
    """Median seconds for one call of Procrastinate's claim function, with
    ``finished`` succeeded jobs and ``CLAIMS`` waiting ones in its table."""
    import psycopg
    from procrastinate import App, PsycopgConnector

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    app = App(connector=PsycopgConnector(conninfo=dsn))
    with app.open():
        app.schema_manager.apply_schema()
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status) "
            "SELECT 'default', 'bench.done', '{}', 'succeeded' "
            f"FROM generate_series(1, {finished})"
        )
        connection.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
            f"SELECT 'default', 'bench.work', '{{}}' FROM generate_series(1, {CLAIMS})"
        )
        connection.execute("ANALYZE procrastinate_jobs")
        row = connection.execute("SELECT procrastinate_register_worker_v1()").fetchone()
        assert row is not None
        worker_id = row[0]
        timings = []
        for _ in range(CLAIMS):
            started = time.perf_counter()
            connection.execute(
                "SELECT id FROM procrastinate_fetch_job_v2(NULL, %s)", (worker_id,)
            ).fetchone()
            timings.append(time.perf_counter() - started)

    return statistics.median(timings)


def measure(url: str, finished: int) -> float:
    store = SQLStore(url)
    store.open()
    try:
        fill_finished(store, finished)
        return claim_cost(store)
    finally:
        store.close()


def measure_redis(url: str, finished: int) -> float:
    redis.Redis.from_url(url).flushdb()
    store = RedisStore(url)
    store.open()
    try:
        fill_finished_redis(store, finished)
        return claim_cost(store)
    finally:
        store.close()
        # A million jobs take about a gigabyte of the server's memory.
        redis.Redis.from_url(url).flushdb()


def measure_all(big: int) -> list[dict[str, float | str]]:
    """Each system's median one-job claim, in ms, with 1,000 and with
    ``big`` finished jobs kept."""
    from .peers.systems import REDIS_URL, offload_url, reset

    systems = ["sqlite", "postgres", "redis"]
    try:
        import procrastinate  # noqa: F401
    except ImportError:
        print("Procrastinate is not installed (pip install -e '.[peers]'); skipped.")
    else:
        systems.append("procrastinate")

    rows: list[dict[str, float | str]] = []
    for label in systems:
        costs = []
        for finished in (1_000, big):
            if label == "sqlite":
                url = f"sqlite:///{tempfile.mkdtemp()}/claims.sqlite3"
                costs.append(measure(url, finished))
            elif label == "redis":
                costs.append(measure_redis(REDIS_URL, finished))
            else:
                reset("postgres")
                url = offload_url("postgres")
                if label == "postgres":
                    costs.append(measure(url, finished))
                else:
                    costs.append(procrastinate_claim_cost(url, finished))
        rows.append(
            {
                "system": label,
                "small_ms": costs[0] * 1000,
                "big_ms": costs[1] * 1000,
                "ratio": costs[1] / costs[0],
            }
        )

    return rows


def print_rows(rows: list[dict[str, float | str]], big: int) -> None:
    print(f"{'store':14} {'1,000 finished':>16} {f'{big:,} finished':>18} ratio")
    for row in rows:
        print(
            f"{row['system']:14} {row['small_ms']:>13.3f} ms "
            f"{row['big_ms']:>15.3f} ms {row['ratio']:>5.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.claim_cost")
    parser.add_argument("--big", type=int, default=1_000_000)
    arguments = parser.parse_args()

    print_rows(measure_all(arguments.big), arguments.big)


if __name__ == "__main__":
    main()
