"""Celery on Redis as broker, with no result backend: a no-op returns
nothing worth storing, as most background jobs do."""

from __future__ import annotations

import os

from celery import Celery

from ..report import job_ran

app = Celery("bench", broker=os.environ.get("BENCH_REDIS_URL", "redis://"))
app.conf.update(task_ignore_result=True, worker_hijack_root_logger=False)


@app.task(name="noop")  # type: ignore[untyped-decorator]
def noop(number: int) -> None:
    job_ran(number)
