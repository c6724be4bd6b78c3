"""RQ: the no-op as a plain function; RQ imports it by its dotted name."""

from __future__ import annotations

from ..report import job_ran


def noop(number: int) -> None:
    job_ran(number)
