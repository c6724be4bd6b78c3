"""The exceptions Flask-Offload raises.

The tree is shallow on purpose: catch :class:`OffloadError` for anything the
library raises, or one of its few subclasses for a specific case.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .records import JobError


class OffloadError(Exception):
    """Base class of every error Flask-Offload raises on purpose."""


class ConfigurationError(OffloadError, ValueError):
    """Raised at ``init_app`` when an ``OFFLOAD_*`` setting is unknown or has a
    value that is not accepted. The message names the key, the value and what
    is accepted.
    """


class JobFailed(OffloadError):
    """Raised by :meth:`Job.wait` when the job ended in ``failed``.

    :attr:`error` holds the exception type, message and traceback recorded by
    the worker, because the original exception object lived in another thread
    or process and cannot be raised here.
    """

    def __init__(self, job_id: str, error: JobError | None) -> None:
        self.job_id = job_id
        self.error = error
        if error is None:
            detail = "no error was recorded"
        else:
            detail = f"{error.type}: {error.message}"
        super().__init__(f"Job {job_id!r} failed: {detail}")


class JobCancelled(OffloadError):
    """Raised by :meth:`Job.wait` when the job was cancelled, and inside a task
    by :meth:`JobContext.raise_if_cancelled` when a cancellation was requested.
    """

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"Job {job_id!r} was cancelled.")


class WaitTimeout(OffloadError, TimeoutError):
    """Raised by :meth:`Job.wait` when the job has not ended within the given
    timeout. The job itself is not affected and may still finish later.
    """


class Retry(OffloadError):
    """Raised by a task to ask for another attempt, after ``delay`` seconds
    (or the task's backoff when ``None``). It uses up one of the task's
    ``retries``; with none left the job fails, with ``reason`` as its error.
    """

    def __init__(self, delay: float | None = None, reason: str = "") -> None:
        if delay is not None and (
            isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0
        ):
            raise ValueError(f"delay must be seconds, 0 or more, not {delay!r}.")
        self.delay = delay
        self.reason = reason
        super().__init__(reason or "The task asked for a retry.")


class JobTimeout(BaseException):
    """Raised inside a task that ran past its ``timeout``, to stop it.

    It derives from ``BaseException``, like ``KeyboardInterrupt``, so that a
    task's own ``except Exception`` does not swallow it. The worker records
    the attempt as failed with this type, and retries it if the task has
    retries left. Python delivers it between two bytecodes: a thread blocked
    inside one C call (a socket read without a timeout, ``time.sleep``)
    sees it only when that call returns.
    """
