"""``Probe``: what the benchmark's no-op task reports back to the harness.

Every system runs the same task body, :meth:`Probe.job_ran`, so completion is
detected in memory by all of them alike and no measurement polls a database.
"""

from __future__ import annotations

import threading
import time


class Probe:
    """Counts the jobs that ran and notes when the last expected one did.

    The harness calls :meth:`expect` before a phase, the task calls
    :meth:`job_ran` on a worker thread, and the harness blocks in
    :meth:`wait`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._expected = 0
        self._count = 0
        self._last_ran_at = 0.0
        self._done = threading.Event()
        self._record_starts = False
        self.starts: dict[int, float] = {}

    def expect(self, count: int, *, record_starts: bool = False) -> None:
        """Start counting afresh towards ``count`` jobs.

        Recording each job's start time costs a dict write, so only the
        latency phase asks for it.
        """
        with self._lock:
            self._expected = count
            self._count = 0
            self._done.clear()
            self._record_starts = record_starts
            self.starts = {}

    def job_ran(self, number: int) -> None:
        """The no-op task's whole body."""
        now = time.perf_counter()
        with self._lock:
            self._count += 1
            if self._record_starts:
                self.starts[number] = now
            if self._count == self._expected:
                self._last_ran_at = now
                self._done.set()

    def wait(self, timeout: float) -> float:
        """Block until the expected jobs have run and return the
        :func:`time.perf_counter` reading taken when the last one started.

        The time is taken on the worker thread, so how quickly this thread
        wakes up does not count.

        :raises TimeoutError: if they have not all run within ``timeout``.
        """
        if not self._done.wait(timeout):
            with self._lock:
                count, expected = self._count, self._expected
            raise TimeoutError(
                f"Only {count} of {expected} jobs ran within {timeout:g} s; the "
                f"system under test is stuck or far slower than expected."
            )

        return self._last_ran_at
