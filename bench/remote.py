"""Flask-Offload on PostgreSQL and Redis: enqueue throughput, drain
throughput with one worker thread, and enqueue-to-start latency from one
app to another (two stores on one server, as two machines would have).

For Redis it also counts the round trips a job costs while two worker apps
drain the queue: every command or pipeline redis-py sends is one.

Run: .venv/bin/python -m bench.remote [--jobs N] [--latency-jobs N]
It uses the servers of the test suite (``tests/services.py``) and empties
their Flask-Offload tables and keys first. The peers are compared in
``bench/run-peers``.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Flask

from flask_offload import Offload


def measure(url: str, jobs: int, latency_jobs: int) -> dict[str, float]:
    """Enqueue and drain ``jobs`` no-op jobs, then time ``latency_jobs``
    jobs enqueued 20 ms apart by one app and started by another's worker."""
    finished = threading.Event()
    ran = [0]
    starts: dict[int, float] = {}

    def count(_: int) -> None:
        ran[0] += 1
        if ran[0] == jobs:
            finished.set()

    def mark(number: int) -> None:
        starts[number] = time.perf_counter()

    web_app, web = _app(url, "web", count, mark)
    worker_app, worker = _app(url, "worker", count, mark)
    try:
        started = time.perf_counter()
        for number in range(jobs):
            web.tasks["count"].enqueue(number)
        enqueue_rate = jobs / (time.perf_counter() - started)

        started = time.perf_counter()
        worker.start_worker(worker_app, threads=1)
        finished.wait(600)
        drain_rate = jobs / (time.perf_counter() - started)

        time.sleep(0.5)
        latencies = []
        for number in range(latency_jobs):
            before = time.perf_counter()
            web.tasks["mark"].enqueue(number)
            time.sleep(0.02)
            deadline = time.monotonic() + 5
            while number not in starts and time.monotonic() < deadline:
                time.sleep(0.001)
            latencies.append((starts[number] - before) * 1000)
    finally:
        web.close(web_app)
        worker.close(worker_app)

    latencies.sort()

    return {
        "enqueue_jobs_per_s": enqueue_rate,
        "drain_jobs_per_s": drain_rate,
        "latency_p50_ms": latencies[len(latencies) // 2],
        "latency_p95_ms": latencies[int(len(latencies) * 0.95)],
        "latency_p99_ms": latencies[int(len(latencies) * 0.99)],
    }


def drain_round_trips(url: str, jobs: int) -> tuple[float, float]:
    """Drain ``jobs`` with two worker apps of one thread each and return
    jobs a second and Redis round trips a job (enqueues not counted)."""
    from redis.connection import Connection

    finished = threading.Event()
    ran = [0]
    lock = threading.Lock()

    def count(_: int) -> None:
        with lock:
            ran[0] += 1
            if ran[0] == jobs:
                finished.set()

    web_app, web = _app(url, "web", count, count)
    workers = [_app(url, f"worker-{n}", count, count) for n in range(2)]
    sent = [0]
    original: Any = Connection.send_packed_command

    def counted(self: Any, command: Any, check_health: Any = True) -> Any:
        sent[0] += 1
        return original(self, command, check_health)

    try:
        for number in range(jobs):
            web.tasks["count"].enqueue(number)
        Connection.send_packed_command = counted  # type: ignore[method-assign]
        started = time.perf_counter()
        for app, offload in workers:
            offload.start_worker(app, threads=1)
        finished.wait(600)
        seconds = time.perf_counter() - started
        round_trips = sent[0]
    finally:
        Connection.send_packed_command = original  # type: ignore[method-assign]
        web.close(web_app)
        for app, offload in workers:
            offload.close(app)

    return jobs / seconds, round_trips / jobs


def _app(
    url: str, name: str, count: Callable[[int], None], mark: Callable[[int], None]
) -> tuple[Flask, Offload]:
    app = Flask(name, instance_path=tempfile.mkdtemp(prefix="offload-bench-"))
    app.config.update(OFFLOAD_URL=url, OFFLOAD_WORKER_THREADS=0)
    offload = Offload(app)
    offload.task(name="count")(count)
    offload.task(name="mark")(mark)

    return app, offload


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.remote")
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--latency-jobs", type=int, default=200)
    arguments = parser.parse_args()

    import redis

    from tests.services import redis_url
    from tests.stores.conftest import fresh_postgres_database

    postgres = fresh_postgres_database()
    redis_store = redis_url()
    redis.Redis.from_url(redis_store).flushdb()

    print(f"{'store':10} {'enqueue/s':>10} {'drain/s':>10} {'p50 ms':>8} {'p95 ms':>8}")
    for label, url in (("postgres", postgres), ("redis", redis_store)):
        result = measure(url, arguments.jobs, arguments.latency_jobs)
        print(
            f"{label:10} {result['enqueue_jobs_per_s']:>10,.0f} "
            f"{result['drain_jobs_per_s']:>10,.0f} "
            f"{result['latency_p50_ms']:>8.2f} {result['latency_p95_ms']:>8.2f}"
        )

    redis.Redis.from_url(redis_store).flushdb()
    rate, round_trips = drain_round_trips(redis_store, arguments.jobs)
    print(
        f"redis, two workers: {rate:,.0f} jobs/s drained, "
        f"{round_trips:.2f} round trips a job"
    )


if __name__ == "__main__":
    main()
