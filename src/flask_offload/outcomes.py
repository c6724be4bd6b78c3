"""What a failed attempt becomes: failed for good, or scheduled again as the
task's retry policy says, with every attempt's error kept on the job.

These are plain functions of the job and its task, apart from the worker
that runs jobs, so the rules read in one place.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from .errors import JobTimeout, Retry
from .records import FAILED, SCHEDULED, JobError, JobRecord, Outcome

if TYPE_CHECKING:
    from .task import Task


def failure(
    record: JobRecord, task: Task[Any, Any] | None, error: Exception | JobTimeout
) -> Outcome:
    """The outcome of an attempt that raised ``error``. :class:`Retry` asks
    for a retry itself; a timeout is retried like the errors in the task's
    ``retry_on``."""
    policy = None if task is None else task.retry
    delay = None
    if isinstance(error, Retry):
        retryable, delay = True, error.delay
    else:
        kinds = () if policy is None else (*policy.retry_on, JobTimeout)
        retryable = isinstance(error, kinds)

    return failed_attempt(record, task, describe(error), retryable, delay)


def failed_attempt(
    record: JobRecord,
    task: Task[Any, Any] | None,
    described: str,
    retryable: bool,
    delay: float | None = None,
) -> Outcome:
    """The outcome of a failed attempt whose error is ``described`` (a
    :class:`JobError` as JSON), scheduled again while the policy has retries
    left and ``retryable`` says the error deserves one."""
    errors = json.loads(record.attempt_errors or "[]")
    errors.append(json.loads(described))
    now = time.time()
    outcome = Outcome(
        record.id,
        record.attempts,
        FAILED,
        now,
        error=described,
        attempt_errors=json.dumps(errors),
    )

    policy = None if task is None else task.retry
    if retryable and policy is not None and record.attempts <= policy.retries:
        if delay is None:
            delay = policy.delay_after(record.attempts)
        outcome.status = SCHEDULED
        outcome.retry_at = now + delay

    return outcome


def retries_child_error(task: Task[Any, Any] | None, described: str) -> bool:
    """Whether an error raised in a child process (``--processes``) is one
    the task retries. It arrives as its type's name, so ``retry_on`` matches
    it by name, or matches anything when it is the default ``(Exception,)``."""
    kind = JobError.from_json(described).type
    kinds = () if task is None else task.retry.retry_on
    names = {
        f"{k.__module__}.{k.__qualname__}".removeprefix("builtins.") for k in kinds
    }

    return Exception in kinds or kind in names


def describe(error: BaseException) -> str:
    return JobError.from_exception(error).to_json()


def message_of(outcome: Outcome) -> str:
    """``Type: message`` of an outcome's error, for one-line log messages."""
    if outcome.error is None:
        return ""

    error = JobError.from_json(outcome.error)

    return f"{error.type}: {error.message}"


def traceback_of(outcome: Outcome) -> str:
    return "" if outcome.error is None else JobError.from_json(outcome.error).traceback
