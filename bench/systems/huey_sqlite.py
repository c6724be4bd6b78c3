"""Huey on its SQLite storage, the nearest peer: a durable queue in one file
and a consumer that can run as threads inside the app's process.

Huey's worker finds new jobs by polling the table, sleeping
``initial_delay`` seconds after finding it empty and multiplying the sleep
by ``backoff`` up to ``max_delay`` while it stays empty. Those settings, not
the storage, decide its latency, so it runs once with its defaults and once
polling every millisecond.
"""

from __future__ import annotations

import inspect
import signal
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from huey import SqliteHuey
from huey.consumer import Consumer

from ..probe import Probe
from .base import SYNCHRONOUS_NAMES, Opener

POLLING_SETTINGS = ("initial_delay", "backoff", "max_delay")

#: The fastest useful polling: one cheap ``SELECT`` a millisecond when idle.
FAST_POLLING: Mapping[str, float] = {
    "initial_delay": 0.001,
    "backoff": 1.0,
    "max_delay": 0.001,
}


class HueySystem:
    """A ``SqliteHuey`` with one no-op task and an in-process consumer."""

    records_outcomes = False

    def __init__(self, huey: Any, task: Any, polling: Mapping[str, float]) -> None:
        self._huey = huey
        self._task = task
        self._polling = polling
        self._consumer: Any = None

    def enqueue(self, number: int) -> None:
        self._task(number)

    def start_worker(self) -> None:
        self._consumer = self._huey.create_consumer(
            workers=1, worker_type="thread", **self._polling
        )
        with _signal_handlers_kept():
            self._consumer.start()

    def stop_worker(self) -> None:
        if self._consumer is not None:
            self._consumer.stop(graceful=True)
            self._consumer = None

    def wait_for_outcomes(self, total: int, timeout: float) -> None:
        """Huey deletes a job when it takes it and stores no result for
        ``None``, so nothing is left to record."""

    def settings(self) -> Mapping[str, str]:
        storage = self._huey.storage
        journal = storage.sql("PRAGMA journal_mode", results=True)[0][0]
        level = storage.sql("PRAGMA synchronous", results=True)[0][0]
        polling = {**consumer_defaults(), **self._polling}

        return {
            "storage": f"SqliteHuey({storage.filename!r})",
            "sqlite_journal_mode": str(journal),
            "sqlite_synchronous": SYNCHRONOUS_NAMES.get(level, str(level)),
            "consumer": "huey.create_consumer(workers=1, worker_type='thread')",
            **{name: f"{polling[name]:g}" for name in POLLING_SETTINGS},
            "polling": "custom" if self._polling else "huey defaults",
        }

    def close(self) -> None:
        self.stop_worker()
        self._huey.storage.close()


def consumer_defaults() -> dict[str, float]:
    """Huey's own polling defaults, read from the installed version rather
    than written down here, so the report stays true after an upgrade."""
    parameters = inspect.signature(Consumer.__init__).parameters

    return {name: float(parameters[name].default) for name in POLLING_SETTINGS}


@contextmanager
def _signal_handlers_kept() -> Iterator[None]:
    """``Consumer.start`` installs handlers for SIGINT and SIGTERM meant for
    its own command-line loop, which does not run here; put back ours so
    Ctrl-C still stops the benchmark."""
    numbers = [signal.SIGINT, signal.SIGTERM]
    if hasattr(signal, "SIGHUP"):
        numbers.append(signal.SIGHUP)
    saved = {number: signal.getsignal(number) for number in numbers}
    try:
        yield
    finally:
        for number, handler in saved.items():
            # None means a handler not set from Python, which cannot be put
            # back; the default is the nearest.
            signal.signal(number, signal.SIG_DFL if handler is None else handler)


def huey_opener(polling: Mapping[str, float]) -> Opener:
    """An opener whose consumer polls with these settings; empty means
    Huey's defaults."""
    return partial(open_huey, polling=polling)


@contextmanager
def open_huey(
    workdir: Path, probe: Probe, polling: Mapping[str, float]
) -> Iterator[HueySystem]:
    huey = SqliteHuey(name="bench", filename=str(workdir / "huey.sqlite3"))

    @huey.task()  # type: ignore[untyped-decorator]
    def noop(number: int) -> None:
        probe.job_ran(number)

    system = HueySystem(huey, noop, polling)
    try:
        yield system
    finally:
        system.close()
