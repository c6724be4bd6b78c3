"""The worker: claims jobs from a store and runs them on named threads.

An executor thread that finds no claimed job waiting claims a batch and
reports the outcomes of earlier jobs in the same transaction. The batch
goes to a queue shared by the worker's threads, so idle threads help run
it. Batches are sized from how long recent jobs took: fast jobs are claimed
many at a time, a slow job alone. A housekeeping thread renews leases,
reports outcomes that waited too long behind a slow job, hands back claimed
jobs that waited too long for a thread (so another process can run them),
and recovers jobs whose worker died.

Delivery is at least once: an outcome not yet reported when the process
dies is lost, and its job runs again after its lease expires.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import inspect
import logging
import os
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import joblog, signals
from .codec import decode_arguments, encode_result
from .context import JobContext, _current_job
from .errors import JobCancelled, JobTimeout
from .job import Job
from .outcomes import (
    failed_attempt,
    failure,
    message_of,
    retries_child_error,
    traceback_of,
)
from .records import (
    CANCELLED,
    FAILED,
    RUNNING,
    SCHEDULED,
    SUCCEEDED,
    JobRecord,
    Outcome,
)

if TYPE_CHECKING:
    from .processes import ProcessRunner
    from .stores.base import Store
    from .task import Task

logger = logging.getLogger(__name__)

#: A batch is sized so that its jobs are expected to take about this long.
BATCH_SECONDS = 0.02
MAX_BATCH = 100
#: An outcome waits at most about this long to be reported with others.
FLUSH_DELAY = 0.05
#: A claimed job that found no free thread for this long is handed back.
PREFETCH_HOLD = 1.0
#: After a claim that did not fill its batch, the next claim waits this
#: long, so that jobs arriving one by one are claimed a few at a time
#: instead of each costing a write transaction of its own.
CLAIM_PAUSE = 0.002
#: How often a worker looks for periodic tasks that are due.
SCHEDULE_INTERVAL = 1.0
#: How often a worker deletes finished jobs past their keep time.
PURGE_INTERVAL = 60.0
HOUSEKEEPING_TICK = 0.05
#: An idle executor claims again at least this often, whatever wakes it.
IDLE_WAIT = 1.0
ERROR_BACKOFF = 1.0


@dataclass(slots=True)
class _Held:
    """A job this worker has claimed and not yet reported."""

    record: JobRecord
    context: JobContext | None = None
    cancel_requested: bool = False
    #: Its outcome is on its way to the store, which then no longer counts
    #: the job as running under this worker.
    reporting: bool = False
    #: While the task function runs: its thread, and when its time is up.
    thread_id: int | None = None
    deadline: float | None = None
    timeout_sent: bool = False


@dataclass(slots=True)
class _Outbox:
    outcomes: list[Outcome] = field(default_factory=list)
    oldest: float = 0.0


def default_worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Worker:
    """Runs jobs from ``store`` on ``threads`` threads.

    :param tasks: finds the registered task of a given name, or ``None``.
    :param job_context: makes the context each job runs in, such as a Flask
        app context.
    :param queues: the queues to serve, or ``None`` for all of them.
    :param lease: seconds a claimed job stays with this worker without a
        heartbeat; a job whose worker died runs again after this long.
    :param max_recoveries: how many times a job whose worker died is run
        again before it is failed.
    """

    def __init__(
        self,
        store: Store,
        tasks: Callable[[str], Task[Any, Any] | None],
        *,
        threads: int = 1,
        queues: Sequence[str] | None = None,
        lease: float = 30.0,
        max_recoveries: int = 3,
        job_context: Callable[[], AbstractContextManager[Any]] = nullcontext,
        name: str | None = None,
        purge: Callable[[], int] | None = None,
        fire_schedules: Callable[[], int] | None = None,
        runner: ProcessRunner | None = None,
        sender: object = None,
        log_level: int | None = logging.INFO,
    ) -> None:
        if threads < 1:
            raise ValueError(f"A worker needs at least one thread, not {threads!r}.")
        self.store = store
        self.name = name or default_worker_name()
        self.threads = threads
        self.queues = list(queues) if queues is not None else None
        self.lease = lease
        self.max_recoveries = max_recoveries
        self._tasks = tasks
        self._job_context = job_context
        self._purge = purge
        self._fire_schedules = fire_schedules
        #: Runs each job in a child process, when set; see :mod:`.processes`.
        self._runner = runner
        #: What the job signals name as their sender: the Flask app.
        self._sender = sender
        #: Records at this level or above that a task makes while it runs go
        #: into its job's log; ``None`` keeps no job logs.
        self.log_level = log_level
        if log_level is not None:
            joblog.install()
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()
        self._outbox = _Outbox()
        self._stopping = threading.Event()
        self._executors: list[threading.Thread] = []
        self._housekeeper: threading.Thread | None = None
        self._typical_duration = BATCH_SECONDS
        self._next_claim_at = 0.0
        self._idle_threads = 0
        self._reserved_threads = 0
        #: Claimed jobs no thread has started yet, with when they arrived.
        self._ready: deque[tuple[JobRecord, float]] = deque()

    @property
    def is_running(self) -> bool:
        return any(thread.is_alive() for thread in self._executors)

    def start(self) -> None:
        """Start the threads. A worker starts once; make a new one to restart."""
        if self._executors:
            raise RuntimeError(f"Worker {self.name!r} was already started.")

        self.store.open()
        for number in range(1, self.threads + 1):
            thread = threading.Thread(
                target=self._execute, name=f"offload-worker-{number}", daemon=True
            )
            self._executors.append(thread)
        self._housekeeper = threading.Thread(
            target=self._housekeep, name="offload-housekeeper", daemon=True
        )
        for thread in self._executors:
            thread.start()
        self._housekeeper.start()
        logger.info(
            "Worker %s started with %d thread(s) on queues %s",
            self.name,
            self.threads,
            "all" if self.queues is None else ", ".join(self.queues),
            extra={"action": "worker_started", "worker": self.name},
        )

    def stop(self, grace: float = 10.0) -> None:
        """Stop claiming, give running jobs ``grace`` seconds to finish, and
        hand every job still held back to the queue so another worker can
        take it at once."""
        if self._stopping.is_set() and not self.is_running:
            return

        self._stopping.set()
        self.store.wake_waiters()
        self._release_waiting(older_than=0)
        deadline = time.monotonic() + grace
        for thread in self._executors:
            thread.join(max(0.0, deadline - time.monotonic()))

        self._flush()
        if self._housekeeper is not None:
            self._housekeeper.join()
        self._hand_back_held()
        if self._runner is not None:
            self._runner.close()
        logger.info(
            "Worker %s stopped",
            self.name,
            extra={"action": "worker_stopped", "worker": self.name},
        )

    def reserve_thread(self, queue: str) -> bool:
        """Reserve an idle thread for a job of ``queue`` about to be enqueued
        in this process, so that :meth:`hand_over` can start it without a
        claim. Returns False when no thread is idle or the queue is not
        served here; then the job is simply enqueued."""
        if self._stopping.is_set() or (
            self.queues is not None and queue not in self.queues
        ):
            return False

        with self._lock:
            if self._idle_threads > self._reserved_threads:
                self._reserved_threads += 1
                return True

        return False

    def unreserve_thread(self) -> None:
        with self._lock:
            self._reserved_threads -= 1

    def claimed_now(self, record: JobRecord) -> JobRecord:
        """``record`` as a claim by this worker would leave it."""
        now = self.store.clock()

        return dataclasses.replace(
            record,
            status=RUNNING,
            worker=self.name,
            attempts=record.attempts + 1,
            started_at=now,
            lease_expires_at=now + self.lease,
        )

    def hand_over(self, record: JobRecord) -> None:
        """Give a reserved thread a job stored as claimed by this worker."""
        with self._lock:
            stopped = self._stopping.is_set()
            if not stopped:
                self._held[record.id] = _Held(record)
                self._ready.append((record, time.monotonic()))
        if stopped:
            # The worker stopped between the reservation and now: no thread
            # will take the job, so hand it back to the queue at once.
            self.unreserve_thread()
            self.store.release(self.name, [record.id], started=False)
            return

        self.store.wake_waiters()

    def run_now(self, record: JobRecord) -> None:
        """Run a job this worker holds in the calling thread and report its
        outcome at once, as ``OFFLOAD_EAGER`` does."""
        with self._lock:
            self._held[record.id] = _Held(record)
        self._run(record)
        self._flush()

    def drain(self, max_jobs: int | None = None) -> int:
        """Claim and run due jobs in the calling thread until none is left,
        or ``max_jobs`` ran; report every outcome; return how many ran."""
        ran = 0
        while max_jobs is None or ran < max_jobs:
            room = MAX_BATCH if max_jobs is None else min(MAX_BATCH, max_jobs - ran)
            claimed = self._report_and_claim(limit=room)
            if not claimed:
                break
            for record in claimed:
                self._run(record)
                ran += 1
        self._flush()

        return ran

    def _execute(self) -> None:
        try:
            self._execute_until_stopped()
        except BaseException:
            logger.critical(
                "Worker %s: thread %s died; jobs it held run again when their "
                "lease expires",
                self.name,
                threading.current_thread().name,
                exc_info=True,
                extra={"action": "worker_died", "worker": self.name},
            )
            raise

    def _execute_until_stopped(self) -> None:
        while not self._stopping.is_set():
            record = self._next_job() or self._wait_for_work()
            if record is None:
                continue

            self._run(record)
            if self._ready and self._outbox_age() > FLUSH_DELAY:
                self._flush()

    def _next_job(self) -> JobRecord | None:
        """A job claimed earlier and not started yet, or else the first of a
        new batch, whose rest goes to the shared queue for idle threads."""
        with self._lock:
            if self._ready:
                if self._reserved_threads:
                    self._reserved_threads -= 1
                return self._ready.popleft()[0]
            if self._reserved_threads:
                # A job is being handed to an idle thread of this worker;
                # claiming now could leave it waiting behind another job.
                return None

        pause = self._next_claim_at - time.monotonic()
        if pause > 0:
            self._stopping.wait(pause)
        claimed = self._report_and_claim()
        if not claimed:
            return None

        if len(claimed) > 1:
            arrived = time.monotonic()
            with self._lock:
                self._ready.extend((record, arrived) for record in claimed[1:])
                idle = self._idle_threads
            if idle:
                self.store.wake_waiters()

        return claimed[0]

    def _wait_for_work(self) -> JobRecord | None:
        """Wait until a job may be ready; return one the store handed this
        thread while it waited, if it did."""
        with self._lock:
            self._idle_threads += 1
        try:
            record = self.store.wait_for_job(
                self.name, self.queues, self.lease, IDLE_WAIT
            )
        finally:
            with self._lock:
                self._idle_threads -= 1
        if record is not None:
            with self._lock:
                self._held[record.id] = _Held(record)

        return record

    def _report_and_claim(self, limit: int | None = None) -> list[JobRecord]:
        outcomes = self._take_outbox()
        if limit is None:
            limit = max(1, min(MAX_BATCH, int(BATCH_SECONDS / self._typical_duration)))
        try:
            _, claimed = self.store.finish_and_claim(
                self.name, outcomes, self.queues, limit, self.lease
            )
            if 0 < len(claimed) < limit:
                self._next_claim_at = time.monotonic() + CLAIM_PAUSE
        except Exception:
            logger.exception(
                "Worker %s could not reach the store; retrying in %s s",
                self.name,
                ERROR_BACKOFF,
                extra={"action": "store_error", "worker": self.name},
            )
            self._return_to_outbox(outcomes)
            self._stopping.wait(ERROR_BACKOFF)
            return []

        self._forget(outcomes)
        with self._lock:
            for record in claimed:
                self._held[record.id] = _Held(record)
        if claimed:
            logger.debug(
                "Worker %s claimed %d job(s)",
                self.name,
                len(claimed),
                extra={"action": "claimed", "worker": self.name},
            )

        return claimed

    def _run(self, record: JobRecord) -> None:
        context = JobContext(
            self.store, self.name, record.id, record.task, record.queue, record.attempts
        )
        with self._lock:
            held = self._held.get(record.id)
            if held is not None:
                held.context = context
                if held.cancel_requested:
                    context.request_cancel()

        extra = {
            "action": "started",
            "job_id": record.id,
            "task": record.task,
            "queue": record.queue,
            "attempt": record.attempts,
        }
        logger.info("Job %s (%s) started", record.id, record.task, extra=extra)
        signals.send(signals.job_started, self._sender, job=Job(self.store, record))
        started = time.perf_counter()
        token = _current_job.set(context)
        log_started = joblog.start(record.attempts, self.log_level)
        try:
            outcome = self._call(record, context)
        finally:
            captured = joblog.stop(log_started)
            _current_job.reset(token)
        duration = time.perf_counter() - started
        outcome.log = joblog.merged(record.log, captured)

        self._typical_duration = 0.7 * self._typical_duration + 0.3 * duration
        if context.unwritten_progress and context.progress is not None:
            outcome.progress = context.progress.to_json()
        self._add_to_outbox(outcome)
        self._log_outcome(record, outcome, duration)
        self._signal_outcome(record, outcome, duration)

    def _call(self, record: JobRecord, context: JobContext) -> Outcome:
        task = self._tasks(record.task)
        if self._runner is not None and not context.cancel_requested:
            return self._call_in_process(record, task, self._runner)

        try:
            if context.cancel_requested:
                raise JobCancelled(record.id)
            if task is None:
                raise LookupError(
                    f"No task named {record.task!r} is registered in this process; "
                    f"it must be decorated with @offload.task() in a module the "
                    f"app imports."
                )
            args, kwargs = decode_arguments(record.arguments)
            with self._job_context():
                value = self._invoke(record, task, args, kwargs)
            result = encode_result(record.task, value)
        except JobCancelled:
            return Outcome(record.id, record.attempts, CANCELLED, time.time())
        except JobTimeout as raised:
            stopped = JobTimeout(
                f"The job ran longer than its timeout of {record.timeout:g} s "
                f"and was stopped."
            ).with_traceback(raised.__traceback__)
            return failure(record, task, stopped)
        except Exception as error:
            return failure(record, task, error)

        return Outcome(record.id, record.attempts, SUCCEEDED, time.time(), result)

    def _invoke(
        self,
        record: JobRecord,
        task: Task[Any, Any],
        args: list[Any],
        kwargs: dict[str, Any],
    ) -> Any:
        """Call the task function, under its timeout if it has one: the
        housekeeper raises :class:`JobTimeout` in this thread once the time is
        up, but only while the function runs, never in the worker's own
        code."""
        held = self._held.get(record.id)
        if record.timeout is not None and held is not None:
            with self._lock:
                held.thread_id = threading.get_ident()
                held.deadline = time.monotonic() + record.timeout
        try:
            value = task.function(*args, **kwargs)
            if inspect.iscoroutine(value):
                value = asyncio.run(value)
        finally:
            if held is not None and held.thread_id is not None:
                with self._lock:
                    held.thread_id = None
                    if held.timeout_sent:
                        # One sent just as the function returned would
                        # otherwise go off in the worker's own code.
                        _set_async_exception(threading.get_ident(), None)

        return value

    def _enforce_timeouts(self) -> None:
        now = time.monotonic()
        with self._lock:
            overdue = [
                held
                for held in self._held.values()
                if held.thread_id is not None
                and held.deadline is not None
                and held.deadline <= now
                and not held.timeout_sent
            ]
            for held in overdue:
                assert held.thread_id is not None
                _set_async_exception(held.thread_id, JobTimeout)
                held.timeout_sent = True
        for held in overdue:
            logger.warning(
                "Job %s (%s) ran past its timeout of %s s; stopping it",
                held.record.id,
                held.record.task,
                held.record.timeout,
                extra={
                    "action": "timed_out",
                    "job_id": held.record.id,
                    "task": held.record.task,
                    "queue": held.record.queue,
                },
            )

    def _call_in_process(
        self, record: JobRecord, task: Task[Any, Any] | None, runner: ProcessRunner
    ) -> Outcome:
        """Run the job in a child process, which sends back its result or
        error and the lines its task logged."""
        try:
            child = runner.run(record)
        except JobTimeout as timeout:
            return failure(record, task, timeout)

        capture = joblog.current()
        if capture is not None:
            capture.add_lines(child.log)
            capture.dropped += child.log_dropped

        if child.error is None:
            return Outcome(
                record.id, record.attempts, SUCCEEDED, time.time(), child.result
            )

        return failed_attempt(
            record, task, child.error, retries_child_error(task, child.error)
        )

    def _signal_outcome(
        self, record: JobRecord, outcome: Outcome, duration: float
    ) -> None:
        signal = _OUTCOME_SIGNALS.get(outcome.status)
        if signal is None or not signal.receivers:
            return

        ended = dataclasses.replace(
            record,
            status=outcome.status,
            result=outcome.result,
            error=outcome.error,
            attempt_errors=outcome.attempt_errors or record.attempt_errors,
            log=outcome.log,
            finished_at=None if outcome.retry_at else outcome.finished_at,
            run_at=outcome.retry_at or record.run_at,
        )
        signals.send(
            signal, self._sender, job=Job(self.store, ended), duration=duration
        )

    def _log_outcome(
        self, record: JobRecord, outcome: Outcome, duration: float
    ) -> None:
        extra = {
            "action": outcome.status,
            "job_id": record.id,
            "task": record.task,
            "queue": record.queue,
            "attempt": record.attempts,
            "duration": duration,
        }
        if outcome.status == SUCCEEDED:
            logger.info(
                "Job %s (%s) succeeded in %.3f s",
                record.id,
                record.task,
                duration,
                extra=extra,
            )
        elif outcome.status == CANCELLED:
            logger.warning(
                "Job %s (%s) was cancelled", record.id, record.task, extra=extra
            )
        elif outcome.status == SCHEDULED and outcome.retry_at is not None:
            extra["action"] = "retrying"
            logger.warning(
                "Job %s (%s) failed on attempt %d and runs again in %.1f s: %s",
                record.id,
                record.task,
                record.attempts,
                outcome.retry_at - outcome.finished_at,
                message_of(outcome),
                extra=extra,
            )
        else:
            logger.error(
                "Job %s (%s) failed after %.3f s:\n%s",
                record.id,
                record.task,
                duration,
                traceback_of(outcome),
                extra=extra,
            )

    def _housekeep(self) -> None:
        next_heartbeat = time.monotonic() + self.lease / 3
        next_recovery = time.monotonic()
        recovery_interval = min(self.lease / 2, 5.0)
        next_purge = time.monotonic()
        next_schedules = time.monotonic()
        while not self._stopping.wait(HOUSEKEEPING_TICK):
            now = time.monotonic()
            try:
                self._enforce_timeouts()
                if self._outbox_age() > FLUSH_DELAY:
                    self._flush()
                if self._ready:
                    self._release_waiting(older_than=PREFETCH_HOLD)
                if now >= next_heartbeat:
                    next_heartbeat = now + self.lease / 3
                    self._heartbeat()
                if now >= next_recovery:
                    next_recovery = now + recovery_interval
                    self._recover()
                if self._fire_schedules is not None and now >= next_schedules:
                    next_schedules = now + SCHEDULE_INTERVAL
                    self._fire_schedules()
                if self._purge is not None and now >= next_purge:
                    next_purge = now + PURGE_INTERVAL
                    self._purge_finished(self._purge)
            except Exception:
                logger.exception(
                    "Worker %s: housekeeping failed; trying again shortly",
                    self.name,
                    extra={"action": "store_error", "worker": self.name},
                )

    def _heartbeat(self) -> None:
        with self._lock:
            held_ids = list(self._held)
        if not held_ids:
            return

        beat = self.store.heartbeat(self.name, held_ids, self.lease)
        with self._lock:
            for job_id in beat.cancel_requested:
                held = self._held.get(job_id)
                if held is None:
                    continue
                held.cancel_requested = True
                if held.context is not None:
                    held.context.request_cancel()
            # A job reported meanwhile is no longer running, but not lost.
            lost = [
                job_id
                for job_id in beat.lost
                if job_id in self._held and not self._held[job_id].reporting
            ]
        for job_id in lost:
            logger.warning(
                "Worker %s lost the lease of job %s; its outcome will be dropped",
                self.name,
                job_id,
                extra={"action": "lease_lost", "job_id": job_id, "worker": self.name},
            )

    def _purge_finished(self, purge: Callable[[], int]) -> None:
        deleted = purge()
        if deleted:
            logger.info(
                "Worker %s deleted %d finished job(s) past their keep time",
                self.name,
                deleted,
                extra={"action": "purged", "worker": self.name},
            )

    def _recover(self) -> None:
        for record in self.store.recover(self.max_recoveries):
            logger.warning(
                "Job %s (%s) was recovered: worker %s stopped heartbeating; the job %s",
                record.id,
                record.task,
                record.worker,
                "failed"
                if record.recoveries >= self.max_recoveries
                else "will run again",
                extra={
                    "action": "recovered",
                    "job_id": record.id,
                    "task": record.task,
                    "queue": record.queue,
                },
            )

    def _flush(self) -> None:
        outcomes = self._take_outbox()
        if not outcomes:
            return

        try:
            self.store.finish(self.name, outcomes)
        except Exception:
            self._return_to_outbox(outcomes)
            raise
        self._forget(outcomes)

    def _add_to_outbox(self, outcome: Outcome) -> None:
        with self._lock:
            if not self._outbox.outcomes:
                self._outbox.oldest = time.monotonic()
            self._outbox.outcomes.append(outcome)

    def _take_outbox(self) -> list[Outcome]:
        with self._lock:
            outcomes, self._outbox.outcomes = self._outbox.outcomes, []
            for outcome in outcomes:
                held = self._held.get(outcome.job_id)
                if held is not None:
                    held.reporting = True

        return outcomes

    def _return_to_outbox(self, outcomes: list[Outcome]) -> None:
        with self._lock:
            if not self._outbox.outcomes:
                self._outbox.oldest = time.monotonic()
            self._outbox.outcomes[:0] = outcomes

    def _outbox_age(self) -> float:
        with self._lock:
            if not self._outbox.outcomes:
                return 0.0

            return time.monotonic() - self._outbox.oldest

    def _forget(self, outcomes: list[Outcome]) -> None:
        with self._lock:
            for outcome in outcomes:
                self._held.pop(outcome.job_id, None)

    def _release_waiting(self, *, older_than: float) -> None:
        """Hand back claimed jobs that waited longer than ``older_than``
        seconds for a thread, so another worker can run them."""
        cutoff = time.monotonic() - older_than
        with self._lock:
            waiting = [
                record.id for record, arrived in self._ready if arrived <= cutoff
            ]
            if not waiting:
                return
            self._ready = deque(
                (record, arrived) for record, arrived in self._ready if arrived > cutoff
            )
            for job_id in waiting:
                self._held.pop(job_id, None)

        released = self.store.release(self.name, waiting, started=False)
        logger.debug(
            "Worker %s handed back %d claimed job(s) that found no free thread",
            self.name,
            released,
            extra={"action": "handed_back", "worker": self.name},
        )

    def _hand_back_held(self) -> None:
        """Hand back what is still held after the grace period: jobs whose
        thread is still busy, and batches of threads that did not stop."""
        with self._lock:
            started = [i for i, held in self._held.items() if held.context]
            unstarted = [i for i, held in self._held.items() if not held.context]
            self._held.clear()

        for job_ids, was_started in ((started, True), (unstarted, False)):
            if not job_ids:
                continue
            released = self.store.release(self.name, job_ids, started=was_started)
            logger.warning(
                "Worker %s handed back %d %s job(s) at shutdown",
                self.name,
                released,
                "interrupted" if was_started else "unstarted",
                extra={"action": "handed_back", "worker": self.name},
            )


_OUTCOME_SIGNALS = {
    SUCCEEDED: signals.job_succeeded,
    FAILED: signals.job_failed,
    SCHEDULED: signals.job_retrying,
    CANCELLED: signals.job_cancelled,
}


def _set_async_exception(thread_id: int, kind: type[BaseException] | None) -> None:
    """Raise ``kind`` in thread ``thread_id`` at its next bytecode, or with
    ``None`` clear one that has not gone off yet. CPython's C API: there is
    no other way to stop a thread from outside."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(kind) if kind else None
    )
