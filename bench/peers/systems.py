"""The systems compared: how to empty their storage, enqueue the no-op job
from the harness, and start one worker process with each one's own command.

Every worker runs jobs one at a time (one thread, a solo pool, concurrency
1), so "four workers" means four processes for every system alike.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import psycopg
import redis
from flask import Flask

from flask_offload import Offload

from .report import job_ran

#: The servers, with databases of the benchmark's own that it empties.
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
POSTGRES_SERVER = os.environ.get(
    "BENCH_POSTGRES_SERVER", "postgresql://postgres@127.0.0.1:5432"
)
POSTGRES_DATABASE = "offload_bench"
POSTGRES_DSN = f"{POSTGRES_SERVER}/{POSTGRES_DATABASE}"

#: The commands of the virtual environment the harness runs in.
BIN = Path(sys.executable).parent

Enqueue = Callable[[int], object]


@dataclass(frozen=True)
class Peer:
    """One row of the table.

    :param client: opens what the harness enqueues with.
    :param worker: the command line of one worker process.
    :param worker_env: what that process needs beyond :func:`environment`.
    """

    key: str
    label: str
    engine: str
    package: str
    client: Callable[[], AbstractContextManager[Enqueue]]
    worker: list[str]
    worker_env: dict[str, str] = field(default_factory=dict)

    def version(self) -> str:
        return version(self.package)


def environment(report_address: str) -> dict[str, str]:
    """What every worker process and the harness itself read."""
    root = Path(__file__).resolve().parents[2]

    return {
        "PYTHONPATH": str(root),
        "BENCH_REPORT_ADDRESS": report_address,
        "BENCH_REDIS_URL": REDIS_URL,
        "BENCH_POSTGRES_DSN": POSTGRES_DSN,
    }


def reset(engine: str) -> None:
    """Empty the benchmark's database on ``engine``, so nothing of one
    system's run is left for the next."""
    if engine == "redis":
        redis.Redis.from_url(REDIS_URL).flushdb()
        return

    with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as server:
        server.execute(f"DROP DATABASE IF EXISTS {POSTGRES_DATABASE} WITH (FORCE)")
        server.execute(f"CREATE DATABASE {POSTGRES_DATABASE}")


def offload_url(engine: str) -> str:
    if engine == "redis":
        return REDIS_URL

    return POSTGRES_DSN.replace("postgresql://", "postgresql+psycopg://")


def offload_peer(engine: str) -> Peer:
    url = offload_url(engine)

    @contextmanager
    def client() -> Iterator[Enqueue]:
        app = Flask("bench-peers-client")
        app.config.update(OFFLOAD_URL=url, OFFLOAD_WORKER_THREADS=0)
        offload = Offload(app)
        noop = offload.task(name="noop")(job_ran)
        try:
            yield noop.enqueue
        finally:
            offload.close(app)

    return Peer(
        key=f"offload-{engine}",
        label="Flask-Offload",
        engine=engine,
        package="flask-offload",
        client=client,
        worker=[
            str(BIN / "flask"),
            "--app",
            "bench.peers.apps.offload_app:create_app",
            "offload",
            "worker",
            "--threads",
            "1",
            "--log-level",
            "WARNING",
        ],
        worker_env={"BENCH_OFFLOAD_URL": url},
    )


@contextmanager
def rq_client() -> Iterator[Enqueue]:
    from rq import Queue

    from .apps.rq_app import noop

    queue = Queue("default", connection=redis.Redis.from_url(REDIS_URL))
    yield lambda number: queue.enqueue(noop, number)


@contextmanager
def celery_client() -> Iterator[Enqueue]:
    from .apps.celery_app import noop

    yield noop.delay


@contextmanager
def huey_client() -> Iterator[Enqueue]:
    from .apps.huey_app import noop

    yield noop


@contextmanager
def procrastinate_client() -> Iterator[Enqueue]:
    from .apps.procrastinate_app import app, noop

    with app.open():
        app.schema_manager.apply_schema()
        yield lambda number: noop.defer(number=number)


PEERS = [
    offload_peer("redis"),
    Peer(
        key="rq",
        label="RQ (SimpleWorker)",
        engine="redis",
        package="rq",
        client=rq_client,
        worker=[
            str(BIN / "rq"),
            "worker",
            "--url",
            REDIS_URL,
            "--worker-class",
            "rq.SimpleWorker",
            "--logging_level",
            "WARNING",
            "default",
        ],
    ),
    Peer(
        key="huey",
        label="Huey",
        engine="redis",
        package="huey",
        client=huey_client,
        worker=[
            str(BIN / "huey_consumer"),
            "bench.peers.apps.huey_app.huey",
            "--workers",
            "1",
            "--worker-type",
            "thread",
            "--no-periodic",
            "--quiet",
        ],
    ),
    Peer(
        key="celery",
        label="Celery (solo pool)",
        engine="redis",
        package="celery",
        client=celery_client,
        worker=[
            str(BIN / "celery"),
            "--app",
            "bench.peers.apps.celery_app",
            "worker",
            "--pool",
            "solo",
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
    ),
    offload_peer("postgres"),
    Peer(
        key="procrastinate",
        label="Procrastinate",
        engine="postgres",
        package="procrastinate",
        client=procrastinate_client,
        worker=[
            str(BIN / "procrastinate"),
            "--app",
            "bench.peers.apps.procrastinate_app.app",
            "worker",
            "--concurrency",
            "1",
        ],
    ),
]
