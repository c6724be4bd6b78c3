"""``current_job``: what a running task knows about its own job.

The worker sets a :class:`JobContext` in a context variable before calling
the task, so ``current_job`` works in the task and in anything it calls, in
any thread the worker runs, without passing it along.
"""

from __future__ import annotations

import logging
import threading
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, NoReturn

from werkzeug.local import LocalProxy

from .errors import JobCancelled, Retry
from .records import Progress

if TYPE_CHECKING:
    from .stores.base import Store

logger = logging.getLogger(__name__)

#: Progress is written to the store at most this often, in seconds; the last
#: value is always kept and written with the job's outcome.
PROGRESS_WRITE_INTERVAL = 0.1

#: How often, in seconds, ``cancel_requested`` asks the store.
CANCEL_CHECK_INTERVAL = 0.5


class JobContext:
    """The running job, as its task sees it through ``current_job``."""

    def __init__(
        self,
        store: Store,
        worker: str,
        job_id: str,
        task: str,
        queue: str,
        attempt: int,
    ) -> None:
        self.id = job_id
        self.task = task
        self.queue = queue
        self.attempt = attempt
        self._store = store
        self._worker = worker
        self._cancel_requested = threading.Event()
        self._last_cancel_check = time.monotonic()
        self._last_progress_write = 0.0
        self.progress: Progress | None = None
        self.unwritten_progress = False

    def set_progress(
        self, done: float, total: float | None = None, message: str | None = None
    ) -> None:
        """Report how far the job has come, for ``job.progress``, the demo and
        the dashboard: ``done`` out of ``total`` units, and what it is doing.

        Calling this often is cheap: the store is written at most ten times a
        second, and the last value is always kept.
        """
        self.progress = Progress(done=done, total=total, message=message)
        now = time.monotonic()
        if now - self._last_progress_write < PROGRESS_WRITE_INTERVAL:
            self.unwritten_progress = True
            return

        self._last_progress_write = now
        self.unwritten_progress = False
        if self._store.set_progress(
            self.id, self._worker, self.attempt, self.progress.to_json()
        ):
            self._cancel_requested.set()

    @property
    def cancel_requested(self) -> bool:
        """Whether someone asked this job to stop. A long task should look now
        and then and return (or call :meth:`raise_if_cancelled`) when it is
        true; nothing stops a task that does not look."""
        if self._cancel_requested.is_set():
            return True

        now = time.monotonic()
        if now - self._last_cancel_check >= CANCEL_CHECK_INTERVAL:
            self._last_cancel_check = now
            record = self._store.get(self.id)
            if record is not None and record.cancel_requested:
                self._cancel_requested.set()

        return self._cancel_requested.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise :class:`~flask_offload.JobCancelled` if a cancellation was
        requested. The worker records the job as ``cancelled``."""
        if self.cancel_requested:
            raise JobCancelled(self.id)

    def retry(self, delay: float | None = None, reason: str = "") -> NoReturn:
        """End this attempt and run the job again after ``delay`` seconds (or
        the task's backoff), if the task has retries left; see
        :class:`~flask_offload.Retry`."""
        raise Retry(delay, reason)

    def request_cancel(self) -> None:
        """Called by the worker when it learns of a cancellation request."""
        self._cancel_requested.set()


_current_job: ContextVar[JobContext] = ContextVar("flask_offload.current_job")

current_job: JobContext = LocalProxy(  # type: ignore[assignment]
    _current_job,
    unbound_message=(
        "current_job is only available while a task runs on a Flask-Offload "
        "worker; outside a job there is no current job."
    ),
)
