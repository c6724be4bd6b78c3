"""Huey on Redis, with its default blocking reads."""

from __future__ import annotations

import os

from huey import RedisHuey

from ..report import job_ran

huey = RedisHuey("bench", url=os.environ.get("BENCH_REDIS_URL", "redis://"))


@huey.task()  # type: ignore[untyped-decorator]
def noop(number: int) -> None:
    job_ran(number)
