"""Procrastinate on PostgreSQL, with its default LISTEN/NOTIFY wake-ups."""

from __future__ import annotations

import os

import procrastinate

from ..report import job_ran

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(
        conninfo=os.environ.get("BENCH_POSTGRES_DSN", "postgresql://")
    )
)


@app.task(name="noop")  # type: ignore[untyped-decorator]
def noop(number: int) -> None:
    job_ran(number)
