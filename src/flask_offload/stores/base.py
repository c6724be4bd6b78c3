"""The contract every store meets.

A store keeps jobs and hands them to workers. Every method is atomic on its
own, and every store passes the same conformance suite in
``tests/stores/``. Stores see only :class:`~flask_offload.records.JobRecord`
and :class:`~flask_offload.records.Outcome`; they never decode a payload.

Time comes from ``self.clock`` so that tests can drive time-based behaviour
(leases, recovery) without sleeping.
"""

from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..records import FAILED, STATUSES, SUCCEEDED, JobRecord, Outcome, Status

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class ListFilter:
    """What :meth:`Store.list_jobs` returns: newest first, at most ``limit``.

    Pages are read by id, which orders jobs by creation: ``before`` keeps
    only jobs older than that id (the next page of a list is the jobs before
    the last one shown), ``after`` only newer ones, and then the ``limit``
    jobs closest to it, so that the previous page is the jobs after the
    first one shown. Either costs the same at any depth, unlike ``offset``,
    which skips that many matching jobs and is kept for callers that count.
    """

    queue: str | None = None
    status: Status | None = None
    task: str | None = None
    limit: int = 50
    offset: int = 0
    before: str | None = None
    after: str | None = None


def page_of(records: list[JobRecord], where: ListFilter) -> list[JobRecord]:
    """The page of ``where`` (its cursors, offset and limit, newest first)
    out of ``records`` that already match its filters, in any order."""
    matching = [
        record
        for record in records
        if (where.before is None or record.id < where.before)
        and (where.after is None or record.id > where.after)
    ]
    closest_first = where.after is not None
    matching.sort(key=lambda record: record.id, reverse=not closest_first)
    page = matching[where.offset : where.offset + where.limit]

    return page[::-1] if closest_first else page


@dataclass(frozen=True, slots=True)
class Throughput:
    """How many jobs ended in one minute, from ``start`` (seconds since the
    epoch, a whole minute) to a minute later."""

    start: int
    succeeded: int
    failed: int


#: How far back :meth:`Store.throughput` can look; the Redis store keeps its
#: counts this long.
THROUGHPUT_MINUTES_KEPT = 120
#: A minute's throughput is counted again until this long after its end, to
#: take in outcomes that a worker reported late (it sends them in batches).
THROUGHPUT_SETTLE_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """What :meth:`Store.heartbeat` learned about a worker's jobs."""

    cancel_requested: frozenset[str]
    lost: frozenset[str]


class Store(ABC):
    """Keeps jobs durably and hands them out to workers.

    A store is shared by every thread of a process. Subclasses ring
    ``self._work`` after anything that may make a job ready, so that idle
    workers in the same process wake at once, and ``self._changes`` after any
    change, for :meth:`Job.wait`.
    """

    clock: Clock

    def __init__(
        self, clock: Clock | None = None, queue_limits: Mapping[str, int] | None = None
    ) -> None:
        self.clock = clock or time.time
        #: The concurrency of each limited queue; see :mod:`.limits`.
        self.queue_limits: dict[str, int] = dict(queue_limits or {})
        self._work = Bell()
        self._changes = Bell()
        #: Throughput of minutes long past, which no longer change: only the
        #: last minutes are counted again at each call.
        self._settled_minutes: dict[int, Throughput] = {}
        self._settled_lock = threading.Lock()

    def describe(self) -> str:
        """Where the jobs are, for people reading messages; never includes a
        password."""
        return type(self).__name__

    def wake_waiters(self) -> None:
        """Wake every thread of this process blocked in :meth:`wait_for_work`
        or :meth:`wait_for_change`, as when a worker stops."""
        self._work.ring()
        self._changes.ring()

    def open(self) -> None:  # noqa: B027 - most stores have nothing to prepare
        """Prepare the store for use (create or migrate the schema). Called
        once before the first other call; calling it again does nothing."""

    def close(self) -> None:  # noqa: B027 - most stores hold no resources
        """Release connections and files. The store may be reopened."""

    def after_fork(self) -> None:  # noqa: B027 - most stores hold no resources
        """Drop connections inherited from a parent process without closing
        them, because the parent still uses them."""

    @abstractmethod
    def enqueue(self, job: JobRecord) -> JobRecord:
        """Store a new job and return it as stored."""

    @abstractmethod
    def claim(
        self, worker: str, queues: Sequence[str] | None, limit: int, lease: float
    ) -> list[JobRecord]:
        """Move up to ``limit`` ready jobs to ``running`` for ``worker`` and
        return them, highest priority first, then oldest run time, skipping
        jobs that ``queue_limits`` or their concurrency key do not let start
        now (see :mod:`.limits`).

        ``queues`` of ``None`` means every queue; given queues are served in
        their order, all ready jobs of the first before any of the second.
        Each returned job has its ``attempts`` raised by one and a lease that
        expires after ``lease`` seconds. A job is never handed to two workers at once.
        """

    @abstractmethod
    def finish(self, worker: str, outcomes: Sequence[Outcome]) -> list[str]:
        """Record how attempts ended and return the ids of the jobs whose
        outcome was applied.

        An outcome is applied only while its job is still ``running`` under
        this worker and attempt; otherwise it is dropped, because a newer
        attempt owns the job.
        """

    def finish_and_claim(
        self,
        worker: str,
        outcomes: Sequence[Outcome],
        queues: Sequence[str] | None,
        limit: int,
        lease: float,
    ) -> tuple[list[str], list[JobRecord]]:
        """:meth:`finish`, then :meth:`claim`. Stores that can do both in one
        round trip override this; the worker uses it between batches."""
        applied = self.finish(worker, outcomes) if outcomes else []

        return applied, self.claim(worker, queues, limit, lease)

    @abstractmethod
    def heartbeat(self, worker: str, job_ids: Iterable[str], lease: float) -> Heartbeat:
        """Extend the leases of ``worker``'s running jobs by ``lease`` seconds
        from now. Reports the jobs asked to cancel and those no longer held by
        this worker (their lease expired and was recovered)."""

    @abstractmethod
    def release(self, worker: str, job_ids: Iterable[str], *, started: bool) -> int:
        """Hand jobs held by ``worker`` back to the queue at once, as on a
        graceful shutdown. ``started=False`` means they never began, so the
        attempt they were given is taken back. Returns how many were handed
        back."""

    @abstractmethod
    def recover(self, max_recoveries: int) -> list[JobRecord]:
        """Return to the queue every running job whose lease has expired
        (its worker died or stalled) and return those jobs as they were.

        A job that has already been recovered ``max_recoveries`` times is
        failed instead, so a job that kills its process every time cannot
        loop forever.
        """

    @abstractmethod
    def get(self, job_id: str) -> JobRecord | None:
        """Return one job, or ``None`` if no job has that id."""

    @abstractmethod
    def list_jobs(self, where: ListFilter) -> list[JobRecord]:
        """Return jobs matching ``where``, newest first."""

    @abstractmethod
    def counts(self) -> dict[str, dict[Status, int]]:
        """Return the number of jobs by queue, then by status. Every status is
        present for every queue that has any job."""

    def throughput(self, minutes: int = 30) -> list[Throughput]:
        """How many jobs succeeded and failed in each of the last ``minutes``
        minutes, the current one included, oldest first, across every
        process that shares the store. Cancelled jobs are not counted."""
        minutes = max(1, min(minutes, THROUGHPUT_MINUTES_KEPT))
        now = self.clock()
        current = math.floor(now / 60) * 60
        first = current - (minutes - 1) * 60
        with self._settled_lock:
            settled = dict(self._settled_minutes)
        unknown = first
        while unknown in settled and unknown < current:
            unknown += 60
        # Only the minutes not settled yet are read: a dashboard polls this
        # every few seconds, and a busy store may hold a million jobs that
        # ended in the last half hour.
        counted = self.finished_per_minute(unknown)
        fresh = {
            start: Throughput(
                start,
                counted.get((start, SUCCEEDED), 0),
                counted.get((start, FAILED), 0),
            )
            for start in range(unknown, current + 60, 60)
        }
        with self._settled_lock:
            for start, bucket in fresh.items():
                if start + 60 + THROUGHPUT_SETTLE_SECONDS < now:
                    self._settled_minutes[start] = bucket
            oldest = current - THROUGHPUT_MINUTES_KEPT * 60
            for start in [s for s in self._settled_minutes if s < oldest]:
                del self._settled_minutes[start]

        return [
            fresh.get(start) or settled[start]
            for start in range(first, current + 60, 60)
        ]

    @abstractmethod
    def finished_per_minute(self, since: int) -> dict[tuple[int, Status], int]:
        """How many jobs ended as ``succeeded`` and as ``failed`` in each
        minute from ``since`` (a whole minute, in seconds since the epoch) on,
        keyed by the minute's start and the status; minutes with none may be
        left out. It must stay cheap however many finished jobs the store
        keeps: it reads only the jobs that ended since then, or counts kept
        per minute. Counting finished jobs, a store may miss those purged
        meanwhile."""

    @abstractmethod
    def set_progress(
        self, job_id: str, worker: str, attempt: int, progress: str
    ) -> bool:
        """Record a running job's progress, if ``worker`` still holds that
        attempt. Returns whether a cancellation was requested."""

    @abstractmethod
    def cancel(self, job_id: str) -> Status | None:
        """Cancel a job: a waiting job becomes ``cancelled`` and never runs; a
        running job is asked to stop (its task sees the request). Returns the
        job's status afterwards, or ``None`` if there is no such job."""

    @abstractmethod
    def purge(
        self,
        finished_before: float,
        *,
        tasks: Sequence[str] | None = None,
        other_than: Sequence[str] = (),
    ) -> int:
        """Delete finished jobs that ended before ``finished_before``: of the
        given ``tasks`` only, or of every task but those in ``other_than``.
        Returns how many were deleted."""

    @abstractmethod
    def sync_schedule(self, name: str, spec: str, next_run_at: float) -> float:
        """Make sure the schedule ``name`` is stored, and return its next run
        time. A new schedule, or one whose ``spec`` changed, is stored with
        ``next_run_at``; otherwise the stored time is kept."""

    @abstractmethod
    def fire_schedule(
        self, name: str, due_at: float, next_run_at: float, job: JobRecord
    ) -> bool:
        """If the schedule ``name`` is still due at ``due_at`` (no other
        process fired it), move it to ``next_run_at`` and enqueue ``job``,
        as one atomic step. Returns whether this call fired it."""

    @abstractmethod
    def list_schedules(self) -> list[tuple[str, str, float]]:
        """Every stored schedule: name, spec and next run time."""

    @abstractmethod
    def wait_for_work(self, timeout: float) -> None:
        """Block until a job may be ready, or ``timeout`` seconds pass.

        An enqueue in this process wakes the waiter at once; how quickly a
        change made by another process is noticed depends on the store.
        """

    def wait_for_job(
        self,
        worker: str,
        queues: Sequence[str] | None,
        lease: float,
        timeout: float,
    ) -> JobRecord | None:
        """Block like :meth:`wait_for_work`, for an idle worker thread.

        A store that can hand a job straight to a waiting thread returns it,
        already claimed for ``worker`` as :meth:`claim` would, so the thread
        skips a round trip for its claim. This default hands over nothing.
        """
        self.wait_for_work(timeout)

        return None

    @abstractmethod
    def wait_for_change(self, timeout: float) -> None:
        """Block until any job may have changed, or ``timeout`` passes. Used by
        :meth:`Job.wait`."""

    @staticmethod
    def empty_counts() -> dict[Status, int]:
        return dict.fromkeys(STATUSES, 0)


class Bell:
    """Wakes threads of this process that wait for a store to change.

    Each thread remembers the last ring it saw, so a ring that happens between
    a thread's failed claim and its next wait is not lost: the wait returns at
    once instead of sleeping through it.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._rings = 0
        self._seen = threading.local()

    def ring(self) -> None:
        with self._condition:
            self._rings += 1
            self._condition.notify_all()

    def wait(self, timeout: float) -> bool:
        """Wait for a ring this thread has not seen. Returns whether one came."""
        with self._condition:
            seen = getattr(self._seen, "rings", -1)
            if self._rings == seen:
                self._condition.wait(timeout)
            rang = self._rings != seen
            self._seen.rings = self._rings

        return rang
