"""A store that keeps jobs in this process's memory.

For tests and experiments only: jobs are lost when the process exits and
other processes cannot see them. Select it with ``OFFLOAD_URL = "memory://"``.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable, Mapping, Sequence

from ..records import (
    CANCELLED,
    FAILED,
    FINISHED_STATUSES,
    QUEUED,
    RUNNING,
    SCHEDULED,
    SUCCEEDED,
    WAITING_STATUSES,
    JobRecord,
    Outcome,
    Status,
)
from .base import Clock, Heartbeat, ListFilter, Store, page_of
from .limits import Admission
from .messages import lost_worker_error


class MemoryStore(Store):
    """Jobs in a dict guarded by one lock."""

    def __init__(
        self, clock: Clock | None = None, queue_limits: Mapping[str, int] | None = None
    ) -> None:
        super().__init__(clock, queue_limits)
        self._jobs: dict[str, JobRecord] = {}
        self._schedules: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def describe(self) -> str:
        return "memory:// (this process only)"

    def enqueue(self, job: JobRecord) -> JobRecord:
        stored = dataclasses.replace(job)
        with self._lock:
            if job.unique_key is not None:
                for existing in self._jobs.values():
                    unfinished = existing.status not in FINISHED_STATUSES
                    if existing.unique_key == job.unique_key and unfinished:
                        return dataclasses.replace(existing)
            self._jobs[stored.id] = stored
        self._ring(work=True)

        return dataclasses.replace(stored)

    def claim(
        self, worker: str, queues: Sequence[str] | None, limit: int, lease: float
    ) -> list[JobRecord]:
        now = self.clock()
        with self._lock:
            for job in self._jobs.values():
                if job.status == SCHEDULED and job.run_at <= now:
                    job.status = QUEUED
            ready = [
                job
                for job in self._jobs.values()
                if job.status == QUEUED
                and job.run_at <= now
                and (queues is None or job.queue in queues)
            ]
            lane = {} if queues is None else {q: i for i, q in enumerate(queues)}
            ready.sort(
                key=lambda job: (
                    lane.get(job.queue, 0),
                    -job.priority,
                    job.run_at,
                    job.id,
                )
            )
            admission = Admission(
                self.queue_limits,
                (
                    (job.queue, job.concurrency_key, job.concurrency_limit)
                    for job in self._jobs.values()
                    if job.status == RUNNING
                ),
            )
            claimed: list[JobRecord] = []
            for job in ready:
                if len(claimed) == limit:
                    break
                if not admission.admit(
                    job.queue, job.concurrency_key, job.concurrency_limit
                ):
                    continue
                job.status = RUNNING
                job.worker = worker
                job.attempts += 1
                job.started_at = now
                job.lease_expires_at = now + lease
                claimed.append(dataclasses.replace(job))
        if claimed:
            self._ring(work=False)

        return claimed

    def finish(self, worker: str, outcomes: Sequence[Outcome]) -> list[str]:
        applied = []
        with self._lock:
            for outcome in outcomes:
                job = self._jobs.get(outcome.job_id)
                if job is None or not self._holds(job, worker, outcome.attempt):
                    continue
                job.status = outcome.status
                retrying = outcome.retry_at is not None
                job.finished_at = None if retrying else outcome.finished_at
                if outcome.retry_at is not None:
                    job.run_at = outcome.retry_at
                if outcome.attempt_errors is not None:
                    job.attempt_errors = outcome.attempt_errors
                job.result = outcome.result
                job.error = outcome.error
                job.log = outcome.log
                if outcome.progress is not None:
                    job.progress = outcome.progress
                job.worker = None
                job.lease_expires_at = None
                applied.append(job.id)
        self._ring(work=False)

        return applied

    def heartbeat(self, worker: str, job_ids: Iterable[str], lease: float) -> Heartbeat:
        expires = self.clock() + lease
        cancel, lost = set(), set()
        with self._lock:
            for job_id in job_ids:
                job = self._jobs.get(job_id)
                if job is None or job.status != RUNNING or job.worker != worker:
                    lost.add(job_id)
                    continue
                job.lease_expires_at = expires
                if job.cancel_requested:
                    cancel.add(job_id)

        return Heartbeat(cancel_requested=frozenset(cancel), lost=frozenset(lost))

    def release(self, worker: str, job_ids: Iterable[str], *, started: bool) -> int:
        released = 0
        with self._lock:
            for job_id in job_ids:
                job = self._jobs.get(job_id)
                if job is None or job.status != RUNNING or job.worker != worker:
                    continue
                self._requeue(job)
                if not started:
                    job.attempts -= 1
                released += 1
        self._ring(work=True)

        return released

    def recover(self, max_recoveries: int) -> list[JobRecord]:
        now = self.clock()
        recovered = []
        with self._lock:
            for job in self._jobs.values():
                expired = (
                    job.lease_expires_at is not None and job.lease_expires_at < now
                )
                if job.status != RUNNING or not expired:
                    continue
                recovered.append(dataclasses.replace(job))
                if job.recoveries >= max_recoveries:
                    job.status = FAILED
                    job.finished_at = now
                    job.error = lost_worker_error(job, max_recoveries)
                    job.worker = None
                    job.lease_expires_at = None
                else:
                    self._requeue(job)
                    job.recoveries += 1
        if recovered:
            self._ring(work=True)

        return recovered

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            job = self._jobs.get(job_id)

            return None if job is None else dataclasses.replace(job)

    def list_jobs(self, where: ListFilter) -> list[JobRecord]:
        with self._lock:
            matching = [
                dataclasses.replace(job)
                for job in self._jobs.values()
                if (where.queue is None or job.queue == where.queue)
                and (where.status is None or job.status == where.status)
                and (where.task is None or job.task == where.task)
            ]

        return page_of(matching, where)

    def counts(self) -> dict[str, dict[Status, int]]:
        counts: dict[str, dict[Status, int]] = {}
        with self._lock:
            for job in self._jobs.values():
                by_status = counts.setdefault(job.queue, self.empty_counts())
                by_status[job.status] += 1

        return counts

    def finished_per_minute(self, since: int) -> dict[tuple[int, Status], int]:
        counted: dict[tuple[int, Status], int] = {}
        with self._lock:
            for job in self._jobs.values():
                ended = job.finished_at
                if job.status not in (SUCCEEDED, FAILED) or ended is None:
                    continue
                if ended >= since:
                    key = (int(ended // 60) * 60, job.status)
                    counted[key] = counted.get(key, 0) + 1

        return counted

    def set_progress(
        self, job_id: str, worker: str, attempt: int, progress: str
    ) -> bool:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or not self._holds(job, worker, attempt):
                return False
            job.progress = progress
            cancel_requested = job.cancel_requested
        self._ring(work=False)

        return cancel_requested

    def cancel(self, job_id: str) -> Status | None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            if job.status in WAITING_STATUSES:
                job.status = CANCELLED
                job.finished_at = self.clock()
            elif job.status == RUNNING:
                job.cancel_requested = True
            status = job.status
        self._ring(work=False)

        return status

    def purge(
        self,
        finished_before: float,
        *,
        tasks: Sequence[str] | None = None,
        other_than: Sequence[str] = (),
    ) -> int:
        with self._lock:
            doomed = [
                job.id
                for job in self._jobs.values()
                if job.status in FINISHED_STATUSES
                and job.finished_at is not None
                and job.finished_at < finished_before
                and (tasks is None or job.task in tasks)
                and job.task not in other_than
            ]
            for job_id in doomed:
                del self._jobs[job_id]

        return len(doomed)

    def sync_schedule(self, name: str, spec: str, next_run_at: float) -> float:
        with self._lock:
            stored = self._schedules.get(name)
            if stored is None or stored[0] != spec:
                self._schedules[name] = (spec, next_run_at)
                return next_run_at

            return stored[1]

    def fire_schedule(
        self, name: str, due_at: float, next_run_at: float, job: JobRecord
    ) -> bool:
        with self._lock:
            stored = self._schedules.get(name)
            if stored is None or stored[1] != due_at:
                return False
            self._schedules[name] = (stored[0], next_run_at)
            self._jobs[job.id] = dataclasses.replace(job)
        self._ring(work=True)

        return True

    def list_schedules(self) -> list[tuple[str, str, float]]:
        with self._lock:
            return [
                (name, spec, next_run_at)
                for name, (spec, next_run_at) in sorted(self._schedules.items())
            ]

    def wait_for_work(self, timeout: float) -> None:
        self._work.wait(timeout)

    def wait_for_change(self, timeout: float) -> None:
        self._changes.wait(timeout)

    @staticmethod
    def _holds(job: JobRecord, worker: str, attempt: int) -> bool:
        return (
            job.status == RUNNING and job.worker == worker and job.attempts == attempt
        )

    @staticmethod
    def _requeue(job: JobRecord) -> None:
        job.status = QUEUED
        job.worker = None
        job.lease_expires_at = None
        job.started_at = None

    def _ring(self, *, work: bool) -> None:
        if work:
            self._work.ring()
        self._changes.ring()
