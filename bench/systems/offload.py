"""Flask-Offload on its default store: an SQLite file in the app's instance
folder, with the worker started by hand so that jobs can pile up first."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import text

from flask_offload import Offload, Task, Worker
from flask_offload.stores.sql import SQLStore

from ..probe import Probe
from .base import SYNCHRONOUS_NAMES, Opener

#: How often :meth:`OffloadSystem.wait_for_outcomes` counts; it runs only
#: after a phase is timed, so it does not slow the measurement.
OUTCOME_POLL_SECONDS = 0.002


class OffloadSystem:
    """A Flask app with ``OFFLOAD_WORKER_THREADS = 0`` and one no-op task."""

    records_outcomes = True

    def __init__(self, app: Flask, offload: Offload, task: Task[[int], None]) -> None:
        self._app = app
        self._offload = offload
        self._task = task
        self._worker: Worker | None = None

    def enqueue(self, number: int) -> None:
        self._task.enqueue(number)

    def start_worker(self) -> None:
        # The worker a user gets: attached to the app, so an enqueue in this
        # process can hand a job straight to an idle thread.
        self._worker = self._offload.start_worker(self._app, threads=1)

    def stop_worker(self) -> None:
        if self._worker is not None:
            self._offload.stop_worker(self._app)
            self._worker = None

    def wait_for_outcomes(self, total: int, timeout: float) -> None:
        """Outcomes are written in batches after the task returns; count them
        in the store, the way another process would see them."""
        deadline = time.monotonic() + timeout
        while self._succeeded() < total:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"Flask-Offload stored {self._succeeded()} of {total} outcomes "
                    f"within {timeout:g} s."
                )
            time.sleep(OUTCOME_POLL_SECONDS)

    def settings(self) -> Mapping[str, str]:
        store = self._offload.state(self._app).store
        if not isinstance(store, SQLStore):
            return {"store": type(store).__name__}

        with store.engine.connect() as connection:
            journal = connection.execute(text("PRAGMA journal_mode")).scalar()
            level = connection.execute(text("PRAGMA synchronous")).scalar()

        return {
            "store": store.describe(),
            "sqlite_journal_mode": str(journal),
            "sqlite_synchronous": SYNCHRONOUS_NAMES.get(int(level or 0), str(level)),
            "worker": "offload.start_worker(app, threads=1)",
        }

    def close(self) -> None:
        self.stop_worker()
        store = self._offload.state(self._app).store
        store.close()

    def _succeeded(self) -> int:
        counts = self._offload.stats().get("default", {})

        return counts.get("succeeded", 0)


def offload_opener(**config: Any) -> Opener:
    """An opener for an app with these ``OFFLOAD_*`` settings on top of the
    defaults, so a variant of the store is one more column."""
    return partial(open_offload, config=config)


@contextmanager
def open_offload(
    workdir: Path, probe: Probe, config: Mapping[str, Any]
) -> Iterator[OffloadSystem]:
    app = Flask(__name__, instance_path=str(workdir / "instance"))
    app.config.update(OFFLOAD_WORKER_THREADS=0, **config)
    offload = Offload(app)

    @offload.task(name="bench.noop")
    def noop(number: int) -> None:
        probe.job_ran(number)

    system = OffloadSystem(app, offload, noop)
    try:
        yield system
    finally:
        system.close()
