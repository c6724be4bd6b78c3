"""The cost of a claim as the table fills with finished jobs: one-job claims
timed with 1,000 and with 1,000,000 finished jobs in the table, on SQLite and
PostgreSQL. The partial indexes should keep the two within a small factor.

Run: .venv/bin/python -m bench.claim_cost [--big N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from sqlalchemy import text

from flask_offload.records import JobRecord, new_job_id
from flask_offload.stores import SQLStore

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


def claim_cost(store: SQLStore) -> float:
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


def measure(url: str, finished: int) -> float:
    store = SQLStore(url)
    store.open()
    try:
        fill_finished(store, finished)
        return claim_cost(store)
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.claim_cost")
    parser.add_argument("--big", type=int, default=1_000_000)
    arguments = parser.parse_args()

    from tests.stores.conftest import fresh_postgres_database

    print(
        f"{'store':10} {'1,000 finished':>16} {f'{arguments.big:,} finished':>18} ratio"
    )
    for label in ("sqlite", "postgres"):
        costs = []
        for finished in (1_000, arguments.big):
            if label == "sqlite":
                url = f"sqlite:///{tempfile.mkdtemp()}/claims.sqlite3"
            else:
                url = fresh_postgres_database()
            costs.append(measure(url, finished))
        print(
            f"{label:10} {costs[0] * 1000:>13.3f} ms {costs[1] * 1000:>15.3f} ms "
            f"{costs[1] / costs[0]:>5.2f}"
        )


if __name__ == "__main__":
    main()
