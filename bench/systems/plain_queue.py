"""The floor: a ``queue.Queue`` and one thread, which is what an app does
before it needs a job system. Nothing is stored, so nothing survives a
restart; it shows what the bookkeeping of a durable queue costs."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from ..probe import Probe


class QueueSystem:
    """Jobs are numbers in a ``queue.Queue``; ``None`` tells the thread to
    stop."""

    records_outcomes = False

    def __init__(self, probe: Probe) -> None:
        self._probe = probe
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def enqueue(self, number: int) -> None:
        self._queue.put(number)

    def start_worker(self) -> None:
        self._thread = threading.Thread(
            target=self._work, name="bench-queue-worker", daemon=True
        )
        self._thread.start()

    def stop_worker(self) -> None:
        if self._thread is None:
            return

        self._queue.put(None)
        self._thread.join()
        self._thread = None

    def wait_for_outcomes(self, total: int, timeout: float) -> None:
        """Nothing is recorded once a job has run."""

    def settings(self) -> Mapping[str, str]:
        return {"durability": "none (in memory)"}

    def _work(self) -> None:
        while True:
            number = self._queue.get()
            if number is None:
                return
            self._probe.job_ran(number)


@contextmanager
def open_plain_queue(workdir: Path, probe: Probe) -> Iterator[QueueSystem]:
    """The directory is unused: the queue lives in memory."""
    system = QueueSystem(probe)
    try:
        yield system
    finally:
        system.stop_worker()
