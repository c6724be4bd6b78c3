"""Periodic tasks: when each one is due next.

A schedule is a cron expression (parsed by croniter, the ``cron`` extra) or
a fixed interval. Every process with a worker looks at the schedules about
once a second, but a tick is enqueued once across all of them: the store
moves a schedule's next run time forward and enqueues its job in one atomic
step that only one process can win. After downtime the missed ticks collapse
into one run, because the next run is computed from now, not from the tick
that was missed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from .errors import ConfigurationError


@dataclass(frozen=True, slots=True)
class Schedule:
    """When the task named ``task`` runs by itself."""

    task: str
    cron: str | None = None
    every: float | None = None

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.every is None):
            raise ValueError("A periodic task needs a cron expression or every=.")
        if self.cron is not None:
            _croniter(self.cron)
        if self.every is not None and (
            not math.isfinite(self.every) or self.every <= 0
        ):
            raise ValueError(
                f"every must be a positive number of seconds or a timedelta, "
                f"not {self.every!r}."
            )

    @property
    def spec(self) -> str:
        """The schedule as text, stored beside its next run time so that a
        changed schedule is noticed."""
        return f"cron {self.cron}" if self.cron is not None else f"every {self.every}"

    def next_after(self, timestamp: float) -> float:
        """The first run time after ``timestamp`` (seconds since the epoch;
        cron expressions are read in UTC)."""
        if self.every is not None:
            return timestamp + self.every

        assert self.cron is not None
        start = datetime.fromtimestamp(timestamp, tz=timezone.utc)

        return float(_croniter(self.cron, start).get_next(float))


def seconds(every: float | timedelta | None) -> float | None:
    if isinstance(every, timedelta):
        return every.total_seconds()

    return every


def _croniter(expression: str, start: datetime | None = None) -> Any:
    try:
        from croniter import croniter
    except ImportError as missing:
        raise ConfigurationError(
            f"The cron expression {expression!r} needs croniter: install "
            f"flask-offload[cron], or use every= for a fixed interval."
        ) from missing

    if not croniter.is_valid(expression):
        raise ValueError(
            f"{expression!r} is not a cron expression; use five fields, "
            f"minute hour day-of-month month day-of-week, such as '*/5 * * * *'."
        )

    return croniter(expression, start or datetime.now(timezone.utc))
