"""What the harness needs from each system under test."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..probe import Probe

#: SQLite's ``PRAGMA synchronous`` values by number, for reports.
SYNCHRONOUS_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


class System(Protocol):
    """A job system with one worker thread, opened in its own directory.

    Every job runs the same no-op task, which calls :meth:`Probe.job_ran`
    with the job's number.
    """

    #: Whether outcomes are still being written after a task returns, so the
    #: report says how long that took.
    records_outcomes: bool

    def enqueue(self, number: int) -> None:
        """Queue one job; it must be as durable as the system ever makes it
        by the time this returns."""

    def start_worker(self) -> None:
        """Start one worker thread in this process."""

    def stop_worker(self) -> None:
        """Stop the worker and wait for its threads to end."""

    def wait_for_outcomes(self, total: int, timeout: float) -> None:
        """Block until the outcomes of ``total`` jobs are stored, for a
        system that records them after the task returns."""

    def settings(self) -> Mapping[str, str]:
        """The settings that shape the numbers, as read back from the running
        system where that is possible."""


#: Opens a system in a fresh directory and closes it on exit.
Opener = Callable[[Path, Probe], AbstractContextManager[System]]


@dataclass(frozen=True, slots=True)
class SystemSpec:
    """One column of the results table."""

    key: str
    label: str
    open: Opener
