"""Errors that a store itself records on a job."""

from __future__ import annotations

from ..records import JobError, JobRecord


def lost_worker_error(job: JobRecord, max_recoveries: int) -> str:
    """The error recorded when a job's worker died too many times."""
    message = (
        f"The worker running this job stopped without reporting an outcome "
        f"{job.recoveries + 1} times (last worker {job.worker!r}); the job was "
        f"failed instead of being run again, because it was already recovered "
        f"{max_recoveries} times (OFFLOAD_MAX_RECOVERIES). A job that kills "
        f"its process (out of memory, a crash in C code) does this."
    )

    return JobError(type="WorkerLost", message=message, traceback="").to_json()
