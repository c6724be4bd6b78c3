"""``Job``: a handle on one enqueued run of a task."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from . import codec
from .errors import JobCancelled, JobFailed, WaitTimeout
from .records import (
    CANCELLED,
    FAILED,
    FINISHED_STATUSES,
    JobError,
    JobRecord,
    Progress,
    Status,
)

if TYPE_CHECKING:
    from .stores.base import Store


class Job:
    """One enqueued run of a task, as it was when last read from the store.

    Attributes reflect the store at the time of the last :meth:`refresh` (or of
    creation); call :meth:`refresh` to read them again.
    """

    def __init__(self, store: Store, record: JobRecord) -> None:
        self._store = store
        self._record = record

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.task} {self.status}>"

    @property
    def id(self) -> str:
        return self._record.id

    @property
    def task(self) -> str:
        """The registered name of the task."""
        return self._record.task

    @property
    def queue(self) -> str:
        return self._record.queue

    @property
    def priority(self) -> int:
        return self._record.priority

    @property
    def status(self) -> Status:
        return self._record.status

    @property
    def args(self) -> list[Any]:
        return codec.decode_arguments(self._record.arguments)[0]

    @property
    def kwargs(self) -> dict[str, Any]:
        return codec.decode_arguments(self._record.arguments)[1]

    @property
    def result(self) -> Any:
        """What the task returned, once it has succeeded; otherwise ``None``."""
        return codec.decode(self._record.result)

    @property
    def error(self) -> JobError | None:
        """The type, message and traceback of the last failure, if any."""
        text = self._record.error
        return None if text is None else JobError.from_json(text)

    @property
    def errors(self) -> list[JobError]:
        """The error of every failed attempt, oldest first; a job that was
        retried keeps them all."""
        text = self._record.attempt_errors
        if text is None:
            error = self.error
            return [] if error is None else [error]

        return [JobError.from_json(json.dumps(item)) for item in json.loads(text)]

    @property
    def log(self) -> str | None:
        """What the task logged while it ran, as text: one line per record
        (``[attempt N] HH:MM:SS.mmm LEVEL logger: message``, in UTC), every
        attempt's lines in order, at most the newest 200 lines and 64 KiB;
        ``None`` while nothing was logged. Written when an attempt ends, so
        a running job shows the lines of its earlier attempts only."""
        return self._record.log

    @property
    def run_at(self) -> datetime:
        """When the job may start (for a scheduled job, or a retry)."""
        return _as_datetime(self._record.run_at)

    @property
    def progress(self) -> Progress | None:
        """The last progress the task reported, if any."""
        text = self._record.progress
        return None if text is None else Progress.from_json(text)

    @property
    def worker(self) -> str | None:
        """The worker that holds the job while it runs (``host:pid:tag``)."""
        return self._record.worker

    @property
    def attempts(self) -> int:
        """How many times a worker has started this job."""
        return self._record.attempts

    @property
    def enqueued_at(self) -> datetime:
        return _as_datetime(self._record.enqueued_at)

    @property
    def started_at(self) -> datetime | None:
        value = self._record.started_at
        return None if value is None else _as_datetime(value)

    @property
    def finished_at(self) -> datetime | None:
        value = self._record.finished_at
        return None if value is None else _as_datetime(value)

    @property
    def is_finished(self) -> bool:
        return self._record.status in FINISHED_STATUSES

    def refresh(self) -> Job:
        """Read the job again from the store. Returns the job itself.

        If the job was purged meanwhile, the last known state is kept.
        """
        record = self._store.get(self.id)
        if record is not None:
            self._record = record

        return self

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the job has ended and return its result.

        :raises JobFailed: if the job failed; ``.error`` has the details.
        :raises JobCancelled: if the job was cancelled.
        :raises WaitTimeout: if it has not ended within ``timeout`` seconds.
            The job is not affected and may still end later.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.refresh().is_finished:
            remaining = 1.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(
                    f"Job {self.id!r} is still {self.status} after {timeout} seconds."
                )
            self._store.wait_for_change(min(remaining, 1.0))

        if self.status == FAILED:
            raise JobFailed(self.id, self.error)
        if self.status == CANCELLED:
            raise JobCancelled(self.id)

        return self.result

    def cancel(self) -> Status | None:
        """Cancel the job. A waiting job is cancelled at once and never runs. A
        running job is asked to stop: its task sees ``current_job.
        cancel_requested`` and ends as ``cancelled`` if it stops by raising
        :class:`~flask_offload.JobCancelled`. A finished job is not changed.

        Returns the status afterwards.
        """
        status = self._store.cancel(self.id)
        self.refresh()

        return status


def _as_datetime(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc)
