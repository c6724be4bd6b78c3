"""A store on Redis, through redis-py: ``OFFLOAD_URL = "redis://host:6379/0"``.

Every contract method is one Lua function, which Redis runs without
interleaving any other command, so each method is atomic across every
process and machine that shares the server. The functions make up one Redis
Functions library (Redis 7.0 or newer), loaded by the first process to find
it missing; its name carries a digest of its code, so processes of
different versions of Flask-Offload each call their own. Times come from
``store.clock`` in Python and travel into the functions as arguments; the
functions never read the server's clock, so a fake clock drives leases in
tests.

Data layout, every key under ``prefix`` (default ``"offload:"``):

``job:{id}`` (hash)
    The :class:`~flask_offload.records.JobRecord` fields as text; a field
    that is ``None`` is absent, so ``None`` and ``""`` stay apart. Booleans
    are ``"1"``/``"0"``, floats are Python's ``repr``, which reads back
    exactly.
``ready`` and ``ready:{queue}`` (sorted sets)
    Queued jobs whose run time has come, in claim order: the score is minus
    the priority, and members of equal score sort by their text, which is
    the run time in fixed width followed by ``:`` and the id. ``ready``
    holds every queue, for a claim of all queues; ``ready:{queue}`` serves a
    claim that names its queues.
``delayed`` (sorted set)
    Waiting jobs whose run time has not come (scheduled jobs, retries),
    scored by run time. A claim first moves the due ones to ``ready``.
``running`` (sorted set)
    Running jobs scored by lease expiry, for :meth:`RedisStore.recover`.
``running-by-key`` (hash)
    How many jobs run per concurrency key, kept by every function that
    starts or stops a job, so a claim checks limits without scanning; per
    queue, the claim reads ``counts``.
``finished`` (sorted set)
    Finished jobs by finish time, for :meth:`RedisStore.purge`.
``jobs``, ``status:{status}``, ``queue:{queue}``, ``task:{task}``
    Sorted sets of ids, all scored 0, so that they sort by id: ids are
    time-ordered hex, so this is creation order, and listing newest first is
    a reverse range.
``finished-per-minute:{minute}`` (hashes)
    How many jobs succeeded and failed in the minute that starts at
    ``{minute}`` (seconds since the epoch), for the dashboard's throughput;
    each expires two hours after its last count.
``counts`` (hash)
    ``{status}:{queue}`` to a number, kept by every function, so
    :meth:`RedisStore.counts` never scans.
``unindexed`` (list)
    Jobs the enqueue handed straight to an idle thread, stored as their
    hash alone to keep the job's wait short: the next function that reads
    or changes the indexes, counts or leases adds them there first.
``unique`` (hash)
    Unique key to the id of the unfinished job holding it.
``schedules``, ``schedule-runs`` (hashes)
    Each schedule's spec and next run time.
``idle`` (sorted set), ``inbox:{worker}:{thread}`` (lists)
    Worker threads with nothing to do, each waiting on its own inbox with
    a blocking pop, and registered in ``idle`` by a JSON text of the inbox,
    worker, queues, lease and when the registration expires, scored by
    registration time. An enqueue claims the job for the longest idle
    thread that may run it and pushes it to that thread's inbox, so the
    thread starts it without a claim of its own; a function that publishes
    ``w`` pushes an empty item to every idle inbox instead, to send the
    threads back to claiming.
``events`` (channel)
    Functions publish ``{store token}:w`` when a job may have become ready and
    ``{store token}:c`` after any other change. One thread per store
    listens, on its own connection, and rings the in-process bells.

The functions build key names from the prefix instead of declaring them, so
the store needs one Redis server or a primary with replicas, not Redis
Cluster.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis

from ..records import FAILED, STATUSES, SUCCEEDED, JobRecord, Outcome, Status
from .base import Clock, Heartbeat, ListFilter, Store
from .messages import lost_worker_error
from .redis_scripts import FUNCTIONS, LIBRARY, LIBRARY_NAME

logger = logging.getLogger(__name__)

#: How long the listening thread waits on its socket between checks that
#: the store is closing; a close waits at most this long for it.
LISTEN_TICK = 0.1
#: How long the listening thread waits before reconnecting after an error.
RECONNECT_DELAY = 1.0
#: How long the first wait gives the listening thread to subscribe.
SUBSCRIBE_WAIT = 1.0
#: How long an idle thread's registration outlives its wait, so that one
#: whose process died stops being handed jobs soon after.
IDLE_MARGIN = 1.0
PURGE_SLICE = 1000

_INT_FIELDS = frozenset({"priority", "attempts", "recoveries", "concurrency_limit"})
_FLOAT_FIELDS = frozenset(
    {"enqueued_at", "run_at", "started_at", "finished_at", "lease_expires_at"}
    | {"timeout"}
)
_FIELD_NAMES = tuple(JobRecord.__dataclass_fields__)


class RedisStore(Store):
    """Jobs in one Redis server, shared by every process that reaches it.

    :param url: a ``redis://`` or ``rediss://`` URL, as redis-py reads it.
    :param prefix: put before every key, so that several apps, or tests, can
        share one database.
    """

    def __init__(
        self,
        url: str,
        *,
        clock: Clock | None = None,
        queue_limits: Mapping[str, int] | None = None,
        prefix: str = "offload:",
    ) -> None:
        super().__init__(clock, queue_limits)
        self.url = url
        self.prefix = prefix
        # Tells this store's own events apart from other processes' ones,
        # which its bells have already rung for.
        self._token = secrets.token_hex(8)
        self._lock = threading.Lock()
        self._client: redis.Redis | None = None
        self._listener: threading.Thread | None = None
        self._stop_listening = threading.Event()
        # The registrations of this process's threads blocked on their
        # inboxes right now.
        self._waiting: set[str] = set()

    def describe(self) -> str:
        parts = urlsplit(self.url)
        netloc = parts.netloc.rpartition("@")[2]
        if parts.username:
            netloc = f"{parts.username}@{netloc}"
        query = urlencode(
            [(k, v) for k, v in parse_qsl(parts.query) if k.lower() != "password"]
        )

        return urlunsplit(parts._replace(netloc=netloc, query=query))

    def close(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            self._stop_listening.set()
            client, self._client = self._client, None
        if listener is not None:
            listener.join(LISTEN_TICK * 20)
        if client is not None:
            client.close()

    def after_fork(self) -> None:
        # The parent's client, its sockets and its listening thread belong to
        # the parent; the child starts afresh and leaves them alone.
        self._lock = threading.Lock()
        self._client = None
        self._listener = None
        self._stop_listening = threading.Event()
        self._waiting = set()

    def enqueue(self, job: JobRecord) -> JobRecord:
        existing = self._run(
            "enqueue", self.clock(), json.dumps(self.queue_limits), _encode(job)
        )
        if existing:
            return _read_job(existing)
        self._work.ring()
        self._changes.ring()

        return _copy(job)

    def claim(
        self, worker: str, queues: Sequence[str] | None, limit: int, lease: float
    ) -> list[JobRecord]:
        return self.finish_and_claim(worker, (), queues, limit, lease)[1]

    def finish(self, worker: str, outcomes: Sequence[Outcome]) -> list[str]:
        if not outcomes:
            return []

        # A limit below zero skips the claim, and with it the promotion of
        # due jobs, which a claim does first.
        return self.finish_and_claim(worker, outcomes, None, -1, 0.0)[0]

    def finish_and_claim(
        self,
        worker: str,
        outcomes: Sequence[Outcome],
        queues: Sequence[str] | None,
        limit: int,
        lease: float,
    ) -> tuple[list[str], list[JobRecord]]:
        now = self.clock()
        applied, claimed, wake = self._run(
            "finish_and_claim",
            now,
            worker,
            json.dumps([_outcome(outcome) for outcome in outcomes]),
            "" if queues is None else json.dumps(list(queues)),
            json.dumps(self.queue_limits),
            limit,
            _number(now + lease),
        )
        if len(applied) < len(outcomes):
            stale = sorted({outcome.job_id for outcome in outcomes} - set(applied))
            logger.warning(
                "Dropped the outcome of %d job(s) whose lease this worker no "
                "longer holds (a newer attempt owns them): %s",
                len(stale),
                ", ".join(stale),
                extra={"action": "stale_outcome", "worker": worker},
            )
        if wake:
            self._work.ring()
        if applied or claimed:
            self._changes.ring()

        return [str(job_id) for job_id in applied], [
            _read_job(text) for text in claimed
        ]

    def heartbeat(self, worker: str, job_ids: Iterable[str], lease: float) -> Heartbeat:
        ids = list(job_ids)
        if not ids:
            return Heartbeat(cancel_requested=frozenset(), lost=frozenset())
        now = self.clock()
        cancel, lost = self._run("heartbeat", now, worker, _number(now + lease), *ids)

        return Heartbeat(cancel_requested=frozenset(cancel), lost=frozenset(lost))

    def release(self, worker: str, job_ids: Iterable[str], *, started: bool) -> int:
        ids = list(job_ids)
        if not ids:
            return 0
        released = int(
            self._run("release", self.clock(), worker, "1" if started else "0", *ids)
        )
        if released:
            self._work.ring()
            self._changes.ring()

        return released

    def recover(self, max_recoveries: int) -> list[JobRecord]:
        now = self.clock()
        expired = [_read_job(text) for text in self._run("expired", now)]
        if not expired:
            return []

        # The error message is written in Python; the second function applies
        # it only to jobs still running as they were read, so the change is
        # atomic even though it takes two round trips.
        arguments: list[str | int] = []
        for job in expired:
            failure = ""
            if job.recoveries >= max_recoveries:
                failure = lost_worker_error(job, max_recoveries)
            arguments += [job.id, job.worker or "", job.attempts, failure]
        done = set(self._run("recover", now, *arguments))
        if done:
            self._work.ring()
            self._changes.ring()

        return [job for job in expired if job.id in done]

    def get(self, job_id: str) -> JobRecord | None:
        row = self._redis().hgetall(self.prefix + "job:" + job_id)
        if not row:
            return None

        # The client decodes replies, so every key and value is text.
        return _decode_mapping(cast("dict[str, str]", row))

    def list_jobs(self, where: ListFilter) -> list[JobRecord]:
        rows = self._run(
            "list",
            self.clock(),
            where.queue or "",
            where.status or "",
            where.task or "",
            max(0, where.offset),
            max(0, where.limit),
            where.before or "",
            where.after or "",
        )
        records = [_read_job(text) for text in rows]

        return records[::-1] if where.after else records

    def counts(self) -> dict[str, dict[Status, int]]:
        counts: dict[str, dict[Status, int]] = {}
        row = self._run("counts", self.clock())
        for field, number in zip(row[::2], row[1::2], strict=True):
            status, _, queue = str(field).partition(":")
            if status in STATUSES:
                by_status = counts.setdefault(queue, self.empty_counts())
                by_status[status] = int(number)

        return counts

    def finished_per_minute(self, since: int) -> dict[tuple[int, Status], int]:
        now = int(self.clock() // 60) * 60
        minutes = range(since, now + 60, 60)
        pipeline = self._redis().pipeline(transaction=False)
        for start in minutes:
            pipeline.hgetall(f"{self.prefix}finished-per-minute:{start}")

        counted: dict[tuple[int, Status], int] = {}
        for start, row in zip(minutes, pipeline.execute(), strict=True):
            for status, number in row.items():
                if status in (SUCCEEDED, FAILED):
                    counted[(start, status)] = int(number)

        return counted

    def set_progress(
        self, job_id: str, worker: str, attempt: int, progress: str
    ) -> bool:
        cancel = self._run(
            "set_progress", self.clock(), job_id, worker, attempt, progress
        )
        self._changes.ring()

        return bool(cancel)

    def cancel(self, job_id: str) -> Status | None:
        status = self._run("cancel", self.clock(), job_id)
        if status is None:
            return None
        self._changes.ring()

        return cast(Status, status)

    def purge(
        self,
        finished_before: float,
        *,
        tasks: Sequence[str] | None = None,
        other_than: Sequence[str] = (),
    ) -> int:
        # Slices keep each call short, so other clients are never blocked
        # for long; jobs kept by the task filter are stepped over.
        total, offset = 0, 0
        while True:
            deleted, kept, scanned = self._run(
                "purge",
                self.clock(),
                _number(finished_before),
                offset,
                PURGE_SLICE,
                "" if tasks is None else json.dumps(list(tasks)),
                json.dumps(list(other_than)),
            )
            total += int(deleted)
            offset += int(kept)
            if int(scanned) < PURGE_SLICE:
                break
        if total:
            self._changes.ring()

        return total

    def sync_schedule(self, name: str, spec: str, next_run_at: float) -> float:
        stored = self._run(
            "sync_schedule", self.clock(), name, spec, _number(next_run_at)
        )

        return float(stored)

    def fire_schedule(
        self, name: str, due_at: float, next_run_at: float, job: JobRecord
    ) -> bool:
        fired = self._run(
            "fire_schedule",
            self.clock(),
            name,
            _number(due_at),
            _number(next_run_at),
            _encode(job),
        )
        if fired:
            self._work.ring()
            self._changes.ring()

        return bool(fired)

    def list_schedules(self) -> list[tuple[str, str, float]]:
        client = self._redis()
        specs = client.hgetall(self.prefix + "schedules")
        runs = client.hgetall(self.prefix + "schedule-runs")

        return [
            (str(name), str(specs[name]), float(runs[name]))
            for name in sorted(specs)
            if name in runs
        ]

    def wait_for_work(self, timeout: float) -> None:
        self._listen()
        self._work.wait(timeout)

    def wait_for_job(
        self,
        worker: str,
        queues: Sequence[str] | None,
        lease: float,
        timeout: float,
    ) -> JobRecord | None:
        inbox = f"{worker}:{threading.get_ident()}"
        now = self.clock()
        lanes = "" if queues is None else json.dumps(list(queues))
        registration = json.dumps(
            {
                "inbox": inbox,
                "worker": worker,
                "queues": lanes,
                "lease": _number(lease),
                "expires": _number(now + timeout + IDLE_MARGIN),
            }
        )
        try:
            row = self._run(
                "wait",
                now,
                worker,
                lanes,
                json.dumps(self.queue_limits),
                _number(now + lease),
                registration,
            )
            if row:
                self._changes.ring()
                return _read_job(row)

            with self._lock:
                self._waiting.add(registration)
            try:
                popped = self._redis().blpop([self.prefix + "inbox:" + inbox], timeout)
            finally:
                with self._lock:
                    self._waiting.discard(registration)
            if popped:
                item = popped[1]
            else:
                item = self._run("unwait", self.clock(), registration, inbox)
        except redis.RedisError as error:
            # The registration expires on its own; a job handed to it in
            # the meantime waits in the inbox for this thread's next wait.
            logger.warning(
                "Worker %s could not wait for jobs in %s (%s); trying again",
                worker,
                self.describe(),
                error,
                extra={"action": "store_error", "worker": worker},
            )
            self._work.wait(timeout)
            return None

        if not item:
            return None

        return _read_job(str(item))

    def wake_waiters(self) -> None:
        super().wake_waiters()
        with self._lock:
            registrations = sorted(self._waiting)
        if registrations:
            try:
                self._run("wake", self.clock(), *registrations)
            except redis.RedisError:
                # The threads wake when their wait times out.
                logger.debug("Could not wake idle threads", exc_info=True)

    def wait_for_change(self, timeout: float) -> None:
        self._listen()
        self._changes.wait(timeout)

    def _redis(self) -> redis.Redis:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    made = redis.Redis.from_url(self.url, decode_responses=True)
                    # Loaded first: another thread that sees the client set
                    # goes on without the lock and calls the functions.
                    self._load_library(made)
                    self._client = made
                client = self._client

        return client

    def _load_library(self, client: redis.Redis) -> None:
        """Load this version's functions into the server, unless another
        process has already."""
        try:
            client.function_load(LIBRARY)
        except redis.ResponseError as error:
            if "already exists" in str(error):
                return
            if "unknown command" in str(error).lower():
                raise redis.ResponseError(
                    f"The Redis server at {self.describe()} does not know "
                    f"FUNCTION LOAD: the Redis store needs Redis 7.0 or newer, "
                    f"or Valkey 7.2 or newer ({error})."
                ) from error
            raise

    def _run(self, name: str, now: float, *arguments: str | int) -> Any:
        """Call one function with the prefix, this store's token and
        ``now``."""
        client = self._redis()
        call = (FUNCTIONS[name], 0, self.prefix, self._token, _number(now))
        try:
            return client.fcall(*call, *arguments)
        except redis.ResponseError as error:
            # A server restarted without persistence, or FUNCTION FLUSH,
            # forgets the library; put it back once.
            if "function not found" not in str(error).lower():
                raise
            logger.info("Loading the library %s into Redis again", LIBRARY_NAME)
            self._load_library(client)

            return client.fcall(*call, *arguments)

    def _listen(self) -> None:
        """Start the thread that turns other processes' events into rings of
        this process's bells, unless it runs already, and give it a moment
        to subscribe, so that the caller's wait hears what follows."""
        if self._listener is not None:
            return
        with self._lock:
            if self._listener is not None:
                return
            self._stop_listening = threading.Event()
            subscribed = threading.Event()
            self._listener = threading.Thread(
                target=self._relay,
                args=(self._stop_listening, subscribed),
                name="flask-offload-redis-events",
                daemon=True,
            )
            self._listener.start()
        subscribed.wait(SUBSCRIBE_WAIT)

    def _relay(self, stop: threading.Event, subscribed: threading.Event) -> None:
        channel = self.prefix + "events"
        while not stop.is_set():
            try:
                client = self._redis()
                pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                with pubsub:
                    pubsub.subscribe(channel)
                    if subscribed.is_set():
                        # Events published while the connection was down
                        # are lost: let the waiters look once.
                        self.wake_waiters()
                    subscribed.set()
                    while not stop.is_set():
                        message = pubsub.get_message(timeout=LISTEN_TICK)
                        if message is not None:
                            self._heard(str(message["data"]))
            except (redis.RedisError, OSError) as error:
                if stop.is_set():
                    return
                logger.warning(
                    "Lost the Redis connection that listens for new jobs in %s "
                    "(%s); idle workers poll until it is back.",
                    self.describe(),
                    error,
                )
                stop.wait(RECONNECT_DELAY)

    def _heard(self, event: str) -> None:
        token, _, kind = event.rpartition(":")
        if token == self._token:
            return
        if kind == "w":
            self._work.ring()
        self._changes.ring()


def _number(value: float) -> str:
    """A time as text that reads back as exactly the same float."""
    return repr(float(value))


def _text(name: str, value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if name in _FLOAT_FIELDS:
        return _number(cast(float, value))
    if name in _INT_FIELDS:
        return str(int(cast(int, value)))

    return str(value)


def _encode(job: JobRecord) -> str:
    """The job as a JSON object of its fields as text; ``None`` fields are
    left out. One argument rather than a pair per field: each argument costs
    the client and the server time on the enqueue path."""
    return json.dumps(
        {
            name: _text(name, value)
            for name in _FIELD_NAMES
            if (value := getattr(job, name)) is not None
        }
    )


def _read_job(text: str) -> JobRecord:
    """A job from the JSON text of its hash, as the functions send every job
    (job_text() in the Lua); an inbox filled by an earlier version may hold
    the flat list of HGETALL instead."""
    handed = json.loads(text)
    if isinstance(handed, list):
        return _decode(handed)

    return _decode_mapping(handed)


def _decode(row: Sequence[str]) -> JobRecord:
    """A job from the flat reply of ``HGETALL`` inside a function."""
    return _decode_mapping(dict(zip(row[::2], row[1::2], strict=True)))


def _decode_mapping(row: Mapping[str, str]) -> JobRecord:
    values: dict[str, Any] = {}
    for name, text in row.items():
        if name in _INT_FIELDS:
            values[name] = int(text)
        elif name in _FLOAT_FIELDS:
            values[name] = float(text)
        elif name == "cancel_requested":
            values[name] = text == "1"
        elif name in JobRecord.__dataclass_fields__:
            values[name] = text

    return JobRecord(**values)


def _copy(job: JobRecord) -> JobRecord:
    return JobRecord(**{name: getattr(job, name) for name in _FIELD_NAMES})


def _outcome(outcome: Outcome) -> dict[str, str | int]:
    """An outcome for the finish function: times as exact text, ``None``
    fields left out."""
    sent: dict[str, str | int] = {
        "job_id": outcome.job_id,
        "attempt": outcome.attempt,
        "status": outcome.status,
        "finished_at": _number(outcome.finished_at),
    }
    for name in ("result", "error", "progress", "attempt_errors", "log"):
        value = getattr(outcome, name)
        if value is not None:
            sent[name] = value
    if outcome.retry_at is not None:
        sent["retry_at"] = _number(outcome.retry_at)

    return sent
