"""Flask-Offload: durable background jobs for Flask, with no server to run."""

from __future__ import annotations

from .context import JobContext, current_job
from .errors import (
    ConfigurationError,
    JobCancelled,
    JobFailed,
    JobTimeout,
    OffloadError,
    Retry,
    WaitTimeout,
)
from .extension import Offload
from .job import Job
from .records import STATUSES, JobError, Progress, Status
from .task import Task
from .worker import Worker

__all__ = [
    "STATUSES",
    "ConfigurationError",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobError",
    "JobFailed",
    "JobTimeout",
    "Offload",
    "OffloadError",
    "Progress",
    "Retry",
    "Status",
    "Task",
    "WaitTimeout",
    "Worker",
    "current_job",
]
