"""Plain data that moves between the task layer, the worker and the stores.

A :class:`JobRecord` is one row of the queue as every store keeps it. Its
payload fields (arguments, result, error, progress) are JSON text made by
:mod:`flask_offload.codec`, so a store never needs to understand them.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Final, Literal

Status = Literal["scheduled", "queued", "running", "succeeded", "failed", "cancelled"]

SCHEDULED: Final = "scheduled"
QUEUED: Final = "queued"
RUNNING: Final = "running"
SUCCEEDED: Final = "succeeded"
FAILED: Final = "failed"
CANCELLED: Final = "cancelled"

STATUSES: Final[tuple[Status, ...]] = (
    SCHEDULED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    FAILED,
    CANCELLED,
)
WAITING_STATUSES: Final[tuple[Status, ...]] = (SCHEDULED, QUEUED)
FINISHED_STATUSES: Final[tuple[Status, ...]] = (SUCCEEDED, FAILED, CANCELLED)

DEFAULT_QUEUE: Final = "default"


_last_id = 0
_id_lock = threading.Lock()


def new_job_id() -> str:
    """Return a new job id: 32 hex digits laid out as a version 7 UUID.

    The leading 48 bits are the time in milliseconds, so ids sort by creation
    time and new rows land at the end of a B-tree index instead of at random
    pages, which keeps inserts cheap as the table grows. Within one process
    ids are strictly increasing, even within one millisecond.
    """
    global _last_id

    millis = time.time_ns() // 1_000_000
    random = int.from_bytes(secrets.token_bytes(10), "big")
    value = (
        (millis & (2**48 - 1)) << 80
        | 0x7 << 76
        | (random >> 62 & 0xFFF) << 64
        | 0x2 << 62
        | random & (2**62 - 1)
    )
    with _id_lock:
        if value <= _last_id:
            value = _last_id + 1
        _last_id = value

    return f"{value:032x}"


@dataclass(slots=True)
class JobRecord:
    """One job as a store keeps it. Times are seconds since the epoch."""

    id: str
    task: str
    arguments: str
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    status: Status = QUEUED
    enqueued_at: float = 0.0
    run_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    recoveries: int = 0
    worker: str | None = None
    lease_expires_at: float | None = None
    cancel_requested: bool = False
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    unique_key: str | None = None
    attempt_errors: str | None = None
    timeout: float | None = None
    result: str | None = None
    error: str | None = None
    progress: str | None = None
    #: What the task logged while it ran, every attempt's lines; see
    #: :mod:`flask_offload.joblog`.
    log: str | None = None


@dataclass(slots=True)
class Outcome:
    """How one attempt of a job ended, as the worker reports it to the store.

    ``attempt`` is the attempt number the worker was given by ``claim``; the
    store applies the outcome only while the job is still running under that
    worker and attempt, so a worker that lost its lease cannot overwrite a
    newer attempt.
    """

    job_id: str
    attempt: int
    status: Status
    finished_at: float
    result: str | None = None
    error: str | None = None
    progress: str | None = None
    #: For a retry: when the next attempt may start, and the errors of every
    #: attempt so far (a JSON list), which the store keeps on the job.
    retry_at: float | None = None
    attempt_errors: str | None = None
    #: The job's log after this attempt, earlier attempts' lines included.
    log: str | None = None


@dataclass(frozen=True, slots=True)
class JobError:
    """What went wrong in a failed attempt: the exception's type, its message
    and the formatted traceback."""

    type: str
    message: str
    traceback: str

    @classmethod
    def from_exception(cls, error: BaseException) -> JobError:
        kind = type(error)
        name = kind.__qualname__
        if kind.__module__ != "builtins":
            name = f"{kind.__module__}.{name}"

        return cls(
            type=name,
            message=str(error),
            traceback="".join(traceback.format_exception(error)),
        )

    def to_json(self) -> str:
        return json.dumps(
            {"type": self.type, "message": self.message, "traceback": self.traceback}
        )

    @classmethod
    def from_json(cls, text: str) -> JobError:
        data = json.loads(text)

        return cls(
            type=str(data.get("type", "")),
            message=str(data.get("message", "")),
            traceback=str(data.get("traceback", "")),
        )


@dataclass(frozen=True, slots=True)
class Progress:
    """The last progress a running job reported."""

    done: float
    total: float | None = None
    message: str | None = None

    @property
    def fraction(self) -> float | None:
        """``done / total`` clamped to 0..1, or ``None`` without a total."""
        if not self.total:
            return None

        return max(0.0, min(1.0, self.done / self.total))

    def to_json(self) -> str:
        return json.dumps(
            {"done": self.done, "total": self.total, "message": self.message}
        )

    @classmethod
    def from_json(cls, text: str) -> Progress:
        data: dict[str, Any] = json.loads(text)

        return cls(
            done=data.get("done", 0),
            total=data.get("total"),
            message=data.get("message"),
        )
