"""The dashboard with a million jobs: how long its job list takes to render
page one and a deep page (read by id, ``before=``), against the same depth
read with ``OFFSET``, and how long the overview's numbers take.

Fills an SQLite file (or, with ``--url``, a PostgreSQL database whose
Flask-Offload tables it drops first) with ``--jobs`` jobs: one in 50 failed,
one in 1,000 queued, the rest succeeded; ended evenly over the last week,
as ``OFFLOAD_KEEP_FINISHED`` keeps them. ``--all-recent`` makes every job
end within the last 30 minutes, the worst case for the throughput chart.

Run: .venv/bin/python -m bench.dashboard_paging [--jobs N] [--url URL]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import Engine, create_engine, text

from flask_offload import Offload
from flask_offload.stores import SQLStore

WEEK = 7 * 24 * 3600.0
RECENT = 30 * 60.0


def job_id(number: int, base_millis: int) -> str:
    """The id the fill gives job ``number``: laid out as the store's ids
    are, time first, so that ids sort as the jobs were made."""
    return f"{base_millis + number // 2:012x}7{number:019x}"


def fill(engine: Engine, count: int, now: float, span: float) -> int:
    """Insert ``count`` jobs in one statement; returns the base of their ids."""
    base_millis = int((now - WEEK) * 1000)
    if engine.dialect.name == "sqlite":
        series = (
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
            f"WHERE i < {count}) SELECT i FROM n"
        )
        make_id = f"printf('%012x', {base_millis} + i / 2) || '7' || printf('%019x', i)"
    else:
        series = f"SELECT i FROM generate_series(1, {count}) AS i"
        make_id = (
            f"lpad(to_hex({base_millis}::bigint + i / 2), 12, '0') || '7' || "
            "lpad(to_hex(i::bigint), 19, '0')"
        )
    status = (
        "CASE WHEN i % 1000 = 1 THEN 'queued' WHEN i % 50 = 0 THEN 'failed' "
        "ELSE 'succeeded' END"
    )
    ended = f"{now - span} + i * {span / count}"
    finished = f"CASE WHEN i % 1000 = 1 THEN NULL ELSE {ended} END"
    task = "CASE WHEN i % 4 = 0 THEN 'bench.report' ELSE 'bench.mail' END"
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO offload_jobs (id, task, queue, priority, status, "
                "arguments, enqueued_at, run_at, started_at, finished_at, "
                "attempts, recoveries, cancel_requested, result) "
                f"SELECT {make_id}, {task}, 'default', 0, {status}, "
                '\'{"args":[1],"kwargs":{}}\', '
                f"{ended}, {ended}, {finished}, {finished}, 1, 0, false, 'null' "
                f"FROM ({series}) AS series"
            )
        )
        if engine.dialect.name == "postgresql":
            connection.execute(text("ANALYZE offload_jobs"))
        else:
            connection.execute(text("ANALYZE"))

    return base_millis


def timed(action: Callable[[], Any], repeat: int) -> float:
    """The median time of ``action`` in milliseconds, after one warm-up."""
    action()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)

    return statistics.median(times)


def drop_tables(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        for table in ("offload_jobs", "offload_meta", "offload_schedules"):
            connection.execute(text(f"DROP TABLE IF EXISTS {table}"))
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard_paging")
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--url",
        help="a PostgreSQL URL whose Flask-Offload tables are dropped and "
        "filled (default: a new SQLite file)",
    )
    parser.add_argument(
        "--all-recent",
        action="store_true",
        help="every job ended within the last 30 minutes",
    )
    options = parser.parse_args()
    if options.url and not options.url.startswith("postgresql"):
        parser.error(f"--url must be a PostgreSQL URL, not {options.url!r}.")

    folder = Path(tempfile.mkdtemp(prefix="offload-paging-"))
    url = options.url or f"sqlite:///{folder / 'offload.sqlite3'}"
    if options.url:
        drop_tables(url)
    app = Flask("paging", instance_path=str(folder))
    app.config.update(OFFLOAD_URL=url, OFFLOAD_WORKER_THREADS=0, DEBUG=True)
    offload = Offload(app)
    store = offload.state(app).store
    assert isinstance(store, SQLStore)
    store.open()
    engine = store.engine

    now = time.time()
    started = time.perf_counter()
    span = RECENT if options.all_recent else WEEK
    base = fill(engine, options.jobs, now, span)
    print(
        f"{options.jobs:,} jobs into {store.describe()} in "
        f"{time.perf_counter() - started:.1f} s; ended over the last "
        f"{'30 minutes' if options.all_recent else 'week'}"
    )

    started = time.perf_counter()
    store.throughput(30)
    first_throughput = (time.perf_counter() - started) * 1000
    client = app.test_client()
    depth = options.jobs * 9 // 10
    deep = job_id(options.jobs - depth, base)
    deep_failed = job_id((options.jobs - depth) // 50 * 50, base)

    def get(path: str) -> Callable[[], Any]:
        def fetch() -> None:
            response = client.get(path)
            assert response.status_code == 200, (path, response.status_code)

        return fetch

    rows: list[tuple[str, Callable[[], Any]]] = [
        ("offload.jobs(limit=51), page 1", lambda: offload.jobs(limit=51)),
        (
            f"offload.jobs(limit=51, before=...), {depth:,} deep",
            lambda: offload.jobs(limit=51, before=deep),
        ),
        (
            f"offload.jobs(limit=51, offset={depth:,}) (the old way)",
            lambda: offload.jobs(limit=51, offset=depth),
        ),
        ("GET /offload/jobs, page 1", get("/offload/jobs")),
        (
            f"GET /offload/jobs?before=..., {depth:,} deep",
            get(f"/offload/jobs?before={deep}"),
        ),
        ("GET /offload/jobs?status=failed, page 1", get("/offload/jobs?status=failed")),
        (
            "GET /offload/jobs?status=failed&before=..., deep",
            get(f"/offload/jobs?status=failed&before={deep_failed}"),
        ),
        (
            "GET /offload/jobs?task=bench.report&before=..., deep",
            get(f"/offload/jobs?task=bench.report&before={deep}"),
        ),
        ("GET /offload/jobs?status=queued, page 1", get("/offload/jobs?status=queued")),
        (
            "GET /offload/jobs?status=running (none)",
            get("/offload/jobs?status=running"),
        ),
        (
            "GET /offload/jobs?status=cancelled (none)",
            get("/offload/jobs?status=cancelled"),
        ),
        ("store.throughput(30), again", lambda: store.throughput(30)),
        ("store.counts()", store.counts),
        ("GET /offload/stats.json", get("/offload/stats.json")),
        ("GET /offload/ (overview)", get("/offload/")),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"{'what'.ljust(width)}  median ms of {options.repeat}")
    for name, action in rows:
        print(f"{name.ljust(width)}  {timed(action, options.repeat):10.2f}")
    print(
        f"{'store.throughput(30), first call'.ljust(width)}  "
        f"{first_throughput:10.2f} (once: later calls count the last minutes)"
    )

    offload.close(app)


if __name__ == "__main__":
    main()
