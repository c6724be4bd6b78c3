"""A store on Redis, through redis-py: ``OFFLOAD_URL = "redis://host:6379/0"``.

Every contract method is one Lua script, which Redis runs without
interleaving any other command, so each method is atomic across every
process and machine that shares the server. Times come from ``store.clock``
in Python and travel into the scripts as arguments; the scripts never read
the server's clock, so a fake clock drives leases in tests.

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
``running-by-queue``, ``running-by-key`` (hashes)
    How many jobs run per queue and per concurrency key, kept by every
    script that starts or stops a job, so a claim checks limits without
    scanning.
``finished`` (sorted set)
    Finished jobs by finish time, for :meth:`RedisStore.purge`.
``jobs``, ``status:{status}``, ``queue:{queue}``, ``task:{task}``
    Sorted sets of ids, all scored 0, so that they sort by id: ids are
    time-ordered hex, so this is creation order, and listing newest first is
    a reverse range.
``counts`` (hash)
    ``{status}:{queue}`` to a number, kept by every script, so
    :meth:`RedisStore.counts` never scans.
``unique`` (hash)
    Unique key to the id of the unfinished job holding it.
``schedules``, ``schedule-runs`` (hashes)
    Each schedule's spec and next run time.
``events`` (channel)
    Scripts publish ``{store token}:w`` when a job may have become ready and
    ``{store token}:c`` after any other change. One thread per store
    listens, on its own connection, and rings the in-process bells.

The scripts build key names from the prefix instead of declaring them, so
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
from redis.commands.core import Script

from ..records import STATUSES, JobRecord, Outcome, Status
from .base import Clock, Heartbeat, ListFilter, Store
from .messages import lost_worker_error

logger = logging.getLogger(__name__)

#: How long the listening thread waits on its socket between checks that
#: the store is closing; a close waits at most this long for it.
LISTEN_TICK = 0.1
#: How long the listening thread waits before reconnecting after an error.
RECONNECT_DELAY = 1.0
#: How long the first wait gives the listening thread to subscribe.
SUBSCRIBE_WAIT = 1.0
PURGE_SLICE = 1000

_INT_FIELDS = frozenset({"priority", "attempts", "recoveries", "concurrency_limit"})
_FLOAT_FIELDS = frozenset(
    {"enqueued_at", "run_at", "started_at", "finished_at", "lease_expires_at"}
    | {"timeout"}
)
_FIELD_NAMES = tuple(JobRecord.__dataclass_fields__)

# Helpers every script shares. ARGV[1] is the key prefix, ARGV[2] the token
# of the store that runs the script, ARGV[3] the time now.
_PRELUDE = r"""
local P, TOKEN, NOW_TEXT = ARGV[1], ARGV[2], ARGV[3]
local NOW = tonumber(NOW_TEXT)
local FINISHED = {succeeded = true, failed = true, cancelled = true}

local function job_key(id)
  return P .. 'job:' .. id
end

local function ready_member(id, run_at)
  return string.format('%021.6f', tonumber(run_at)) .. ':' .. id
end

local function bump(hash, field, by)
  if redis.call('HINCRBY', P .. hash, field, by) <= 0 then
    redis.call('HDEL', P .. hash, field)
  end
end

local function set_status(id, queue, old, new)
  if old then
    bump('counts', old .. ':' .. queue, -1)
    redis.call('ZREM', P .. 'status:' .. old, id)
  end
  if new then
    bump('counts', new .. ':' .. queue, 1)
    redis.call('ZADD', P .. 'status:' .. new, 0, id)
    redis.call('HSET', job_key(id), 'status', new)
  end
end

local function place_waiting(id, status, queue, priority, run_at)
  if status == 'scheduled' or tonumber(run_at) > NOW then
    redis.call('ZADD', P .. 'delayed', run_at, id)
  else
    local member = ready_member(id, run_at)
    redis.call('ZADD', P .. 'ready', -tonumber(priority), member)
    redis.call('ZADD', P .. 'ready:' .. queue, -tonumber(priority), member)
  end
end

local function drop_waiting(id, queue, run_at)
  local member = ready_member(id, run_at)
  redis.call('ZREM', P .. 'ready', member)
  redis.call('ZREM', P .. 'ready:' .. queue, member)
  redis.call('ZREM', P .. 'delayed', id)
end

local function count_running(queue, key, by)
  bump('running-by-queue', queue, by)
  if key then
    bump('running-by-key', key, by)
  end
end

local function stop_running(id, queue, key)
  redis.call('ZREM', P .. 'running', id)
  count_running(queue, key, -1)
  redis.call('HDEL', job_key(id), 'worker', 'lease_expires_at')
end

local function requeue(id, queue, key, priority, run_at)
  stop_running(id, queue, key)
  redis.call('HDEL', job_key(id), 'started_at')
  set_status(id, queue, 'running', 'queued')
  place_waiting(id, 'queued', queue, priority, run_at)
end

local function free_unique(id, unique)
  if unique and redis.call('HGET', P .. 'unique', unique) == id then
    redis.call('HDEL', P .. 'unique', unique)
  end
end

local function publish(kind)
  redis.call('PUBLISH', P .. 'events', TOKEN .. ':' .. kind)
end

local function read_job(first)
  local job, fields = {}, {}
  for i = first, #ARGV, 2 do
    job[ARGV[i]] = ARGV[i + 1]
    fields[#fields + 1] = ARGV[i]
    fields[#fields + 1] = ARGV[i + 1]
  end
  return job, fields
end

local function store_job(job, fields)
  local id, queue, status = job.id, job.queue, job.status
  redis.call('HSET', job_key(id), unpack(fields))
  redis.call('ZADD', P .. 'jobs', 0, id)
  redis.call('ZADD', P .. 'queue:' .. queue, 0, id)
  redis.call('ZADD', P .. 'task:' .. job.task, 0, id)
  set_status(id, queue, nil, status)
  if status == 'running' then
    redis.call('ZADD', P .. 'running', job.lease_expires_at or NOW_TEXT, id)
    count_running(queue, job.concurrency_key, 1)
  elseif FINISHED[status] then
    if job.finished_at then
      redis.call('ZADD', P .. 'finished', job.finished_at, id)
    end
  else
    place_waiting(id, status, queue, job.priority, job.run_at)
  end
  if job.unique_key and not FINISHED[status] then
    redis.call('HSET', P .. 'unique', job.unique_key, id)
  end
end
"""

_ENQUEUE = r"""
local job, fields = read_job(4)
if job.unique_key and not FINISHED[job.status] then
  local existing = redis.call('HGET', P .. 'unique', job.unique_key)
  if existing then
    return redis.call('HGETALL', job_key(existing))
  end
end
store_job(job, fields)
publish('w')
return {}
"""

# ARGV[4] worker, [5] outcomes (JSON), [6] queues (JSON, '' for all),
# [7] queue limits (JSON), [8] claim limit (below 0: no claim), [9] lease
# expiry.
_FINISH_AND_CLAIM = r"""
local worker, limits = ARGV[4], cjson.decode(ARGV[7])
local limit = tonumber(ARGV[8])
local applied, wake = {}, false

for _, o in ipairs(cjson.decode(ARGV[5])) do
  local id = o.job_id
  local key = job_key(id)
  local h = redis.call('HMGET', key, 'status', 'worker', 'attempts', 'queue',
    'concurrency_key', 'unique_key', 'priority')
  if h[1] == 'running' and h[2] == worker and tonumber(h[3]) == o.attempt then
    local queue = h[4]
    stop_running(id, queue, h[5])
    set_status(id, queue, 'running', o.status)
    local run_at = redis.call('HGET', key, 'run_at')
    if o.retry_at then
      run_at = o.retry_at
      redis.call('HSET', key, 'run_at', run_at)
      redis.call('HDEL', key, 'finished_at')
    else
      redis.call('HSET', key, 'finished_at', o.finished_at)
    end
    if o.attempt_errors then
      redis.call('HSET', key, 'attempt_errors', o.attempt_errors)
    end
    for _, name in ipairs({'result', 'error'}) do
      if o[name] then
        redis.call('HSET', key, name, o[name])
      else
        redis.call('HDEL', key, name)
      end
    end
    if o.progress then
      redis.call('HSET', key, 'progress', o.progress)
    end
    if FINISHED[o.status] then
      redis.call('ZADD', P .. 'finished', o.finished_at, id)
      free_unique(id, h[6])
    else
      place_waiting(id, o.status, queue, h[7], run_at)
    end
    wake = wake or h[5] ~= false or limits[queue] ~= nil
    applied[#applied + 1] = id
  end
end

local function running_now(hash, name, extra)
  local stored = tonumber(redis.call('HGET', P .. hash, name)) or 0
  return stored + (extra[name] or 0)
end

local claimed = {}
if limit >= 0 then
  local due = redis.call('ZRANGEBYSCORE', P .. 'delayed', '-inf', NOW_TEXT)
  for _, id in ipairs(due) do
    local h = redis.call('HMGET', job_key(id), 'status', 'queue', 'priority',
      'run_at')
    redis.call('ZREM', P .. 'delayed', id)
    if h[1] == 'scheduled' then
      set_status(id, h[2], 'scheduled', 'queued')
    end
    if h[1] == 'scheduled' or h[1] == 'queued' then
      place_waiting(id, 'queued', h[2], h[3], h[4])
    end
  end

  local chosen, by_queue, by_key = {}, {}, {}
  local function full(queue)
    local cap = limits[queue]
    return cap ~= nil and running_now('running-by-queue', queue, by_queue) >= cap
  end
  local function admit(queue, key, key_limit)
    if full(queue) then
      return false
    end
    if key and running_now('running-by-key', key, by_key)
        >= (tonumber(key_limit) or 1) then
      return false
    end
    by_queue[queue] = (by_queue[queue] or 0) + 1
    if key then
      by_key[key] = (by_key[key] or 0) + 1
    end
    return true
  end

  local lanes = {false}
  if ARGV[6] ~= '' then
    lanes = cjson.decode(ARGV[6])
  end
  for _, queue in ipairs(lanes) do
    local lane = P .. 'ready'
    if queue then
      lane = P .. 'ready:' .. queue
    end
    local start = 0
    while #chosen < limit and not (queue and full(queue)) do
      local members = redis.call('ZRANGE', lane, start, start + 99)
      if #members == 0 then
        break
      end
      for _, member in ipairs(members) do
        local id = string.sub(member, string.find(member, ':', 1, true) + 1)
        local h = redis.call('HMGET', job_key(id), 'queue', 'concurrency_key',
          'concurrency_limit')
        if admit(h[1], h[2], h[3]) then
          chosen[#chosen + 1] = id
          if #chosen == limit then
            break
          end
        end
      end
      start = start + 100
    end
  end

  for _, id in ipairs(chosen) do
    local key = job_key(id)
    local h = redis.call('HMGET', key, 'queue', 'run_at', 'concurrency_key')
    drop_waiting(id, h[1], h[2])
    set_status(id, h[1], 'queued', 'running')
    redis.call('HSET', key, 'worker', worker, 'started_at', NOW_TEXT,
      'lease_expires_at', ARGV[9])
    redis.call('HINCRBY', key, 'attempts', 1)
    redis.call('ZADD', P .. 'running', ARGV[9], id)
    count_running(h[1], h[3], 1)
    claimed[#claimed + 1] = redis.call('HGETALL', key)
  end
end

if wake then
  publish('w')
elseif #applied > 0 or #claimed > 0 then
  publish('c')
end
return {applied, claimed, wake and 1 or 0}
"""

# ARGV[4] worker, [5] lease expiry, [6...] job ids.
_HEARTBEAT = r"""
local cancel, lost = {}, {}
for i = 6, #ARGV do
  local id = ARGV[i]
  local h = redis.call('HMGET', job_key(id), 'status', 'worker',
    'cancel_requested')
  if h[1] ~= 'running' or h[2] ~= ARGV[4] then
    lost[#lost + 1] = id
  else
    redis.call('HSET', job_key(id), 'lease_expires_at', ARGV[5])
    redis.call('ZADD', P .. 'running', ARGV[5], id)
    if h[3] == '1' then
      cancel[#cancel + 1] = id
    end
  end
end
return {cancel, lost}
"""

# ARGV[4] worker, [5] '1' if the jobs started, [6...] job ids.
_RELEASE = r"""
local released = 0
for i = 6, #ARGV do
  local id = ARGV[i]
  local h = redis.call('HMGET', job_key(id), 'status', 'worker', 'queue',
    'concurrency_key', 'priority', 'run_at')
  if h[1] == 'running' and h[2] == ARGV[4] then
    requeue(id, h[3], h[4], h[5], h[6])
    if ARGV[5] ~= '1' then
      redis.call('HINCRBY', job_key(id), 'attempts', -1)
    end
    released = released + 1
  end
end
if released > 0 then
  publish('w')
end
return released
"""

_EXPIRED = r"""
local found = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'running', '-inf',
    '(' .. NOW_TEXT)) do
  found[#found + 1] = redis.call('HGETALL', job_key(id))
end
return found
"""

# ARGV[4...] in fours: id, worker and attempts as read by _EXPIRED, and the
# error to fail the job with ('' to queue it again).
_RECOVER = r"""
local done = {}
for i = 4, #ARGV, 4 do
  local id, failure = ARGV[i], ARGV[i + 3]
  local key = job_key(id)
  local h = redis.call('HMGET', key, 'status', 'worker', 'attempts',
    'lease_expires_at', 'queue', 'concurrency_key', 'priority', 'run_at',
    'unique_key')
  if h[1] == 'running' and h[2] == ARGV[i + 1] and h[3] == ARGV[i + 2]
      and tonumber(h[4]) < NOW then
    if failure == '' then
      requeue(id, h[5], h[6], h[7], h[8])
      redis.call('HINCRBY', key, 'recoveries', 1)
    else
      stop_running(id, h[5], h[6])
      set_status(id, h[5], 'running', 'failed')
      redis.call('HSET', key, 'finished_at', NOW_TEXT, 'error', failure)
      redis.call('ZADD', P .. 'finished', NOW_TEXT, id)
      free_unique(id, h[9])
    end
    done[#done + 1] = id
  end
end
if #done > 0 then
  publish('w')
end
return done
"""

_CANCEL = r"""
local id = ARGV[4]
local h = redis.call('HMGET', job_key(id), 'status', 'queue', 'run_at',
  'unique_key')
if not h[1] then
  return false
end
if h[1] == 'scheduled' or h[1] == 'queued' then
  drop_waiting(id, h[2], h[3])
  set_status(id, h[2], h[1], 'cancelled')
  redis.call('HSET', job_key(id), 'finished_at', NOW_TEXT)
  redis.call('ZADD', P .. 'finished', NOW_TEXT, id)
  free_unique(id, h[4])
  publish('c')
  return 'cancelled'
end
if h[1] == 'running' then
  redis.call('HSET', job_key(id), 'cancel_requested', '1')
  publish('c')
end
return h[1]
"""

# ARGV[4] id, [5] worker, [6] attempt, [7] progress.
_SET_PROGRESS = r"""
local h = redis.call('HMGET', job_key(ARGV[4]), 'status', 'worker', 'attempts',
  'cancel_requested')
if h[1] ~= 'running' or h[2] ~= ARGV[5] or h[3] ~= ARGV[6] then
  return 0
end
redis.call('HSET', job_key(ARGV[4]), 'progress', ARGV[7])
publish('c')
if h[4] == '1' then
  return 1
end
return 0
"""

# ARGV[4] cutoff, [5] offset, [6] slice, [7] tasks (JSON, '' for all),
# [8] tasks to keep (JSON).
_PURGE = r"""
local function set_of(list)
  local set = {}
  for _, item in ipairs(list) do
    set[item] = true
  end
  return set
end

local only = nil
if ARGV[7] ~= '' then
  only = set_of(cjson.decode(ARGV[7]))
end
local keep = set_of(cjson.decode(ARGV[8]))
local ids = redis.call('ZRANGEBYSCORE', P .. 'finished', '-inf', '(' .. ARGV[4],
  'LIMIT', ARGV[5], ARGV[6])
local deleted, kept = 0, 0
for _, id in ipairs(ids) do
  local h = redis.call('HMGET', job_key(id), 'task', 'queue', 'status')
  if not h[1] then
    redis.call('ZREM', P .. 'finished', id)
  elseif (only == nil or only[h[1]]) and not keep[h[1]] and FINISHED[h[3]] then
    redis.call('DEL', job_key(id))
    redis.call('ZREM', P .. 'finished', id)
    redis.call('ZREM', P .. 'jobs', id)
    redis.call('ZREM', P .. 'queue:' .. h[2], id)
    redis.call('ZREM', P .. 'task:' .. h[1], id)
    set_status(id, h[2], h[3], nil)
    deleted = deleted + 1
  else
    kept = kept + 1
  end
end
if deleted > 0 then
  publish('c')
end
return {deleted, kept, #ids}
"""

# ARGV[4] name, [5] spec, [6] next run time.
_SYNC_SCHEDULE = r"""
if redis.call('HGET', P .. 'schedules', ARGV[4]) == ARGV[5] then
  return redis.call('HGET', P .. 'schedule-runs', ARGV[4])
end
redis.call('HSET', P .. 'schedules', ARGV[4], ARGV[5])
redis.call('HSET', P .. 'schedule-runs', ARGV[4], ARGV[6])
return ARGV[6]
"""

# ARGV[4] name, [5] due time, [6] next run time, [7...] the job's fields.
_FIRE_SCHEDULE = r"""
if not redis.call('HGET', P .. 'schedules', ARGV[4])
    or redis.call('HGET', P .. 'schedule-runs', ARGV[4]) ~= ARGV[5] then
  return 0
end
redis.call('HSET', P .. 'schedule-runs', ARGV[4], ARGV[6])
store_job(read_job(7))
publish('w')
return 1
"""

# ARGV[4] queue, [5] status, [6] task ('' for any), [7] offset, [8] limit.
_LIST = r"""
local queue, status, task = ARGV[4], ARGV[5], ARGV[6]
local skip, want = tonumber(ARGV[7]), tonumber(ARGV[8])
local index, filters = P .. 'jobs', 0
if status ~= '' then
  index = P .. 'status:' .. status
end
if task ~= '' then
  index = P .. 'task:' .. task
end
if queue ~= '' then
  index = P .. 'queue:' .. queue
end
for _, given in ipairs({queue, status, task}) do
  if given ~= '' then
    filters = filters + 1
  end
end

local found = {}
if filters <= 1 then
  if want > 0 then
    for _, id in ipairs(redis.call('ZREVRANGE', index, skip, skip + want - 1)) do
      found[#found + 1] = redis.call('HGETALL', job_key(id))
    end
  end
  return found
end

local start = 0
while #found < want do
  local ids = redis.call('ZREVRANGE', index, start, start + 199)
  if #ids == 0 then
    break
  end
  for _, id in ipairs(ids) do
    local h = redis.call('HMGET', job_key(id), 'queue', 'status', 'task')
    if (queue == '' or h[1] == queue) and (status == '' or h[2] == status)
        and (task == '' or h[3] == task) then
      if skip > 0 then
        skip = skip - 1
      else
        found[#found + 1] = redis.call('HGETALL', job_key(id))
        if #found >= want then
          break
        end
      end
    end
  end
  start = start + 200
end
return found
"""

_SCRIPTS = {
    "enqueue": _ENQUEUE,
    "finish_and_claim": _FINISH_AND_CLAIM,
    "heartbeat": _HEARTBEAT,
    "release": _RELEASE,
    "expired": _EXPIRED,
    "recover": _RECOVER,
    "cancel": _CANCEL,
    "set_progress": _SET_PROGRESS,
    "purge": _PURGE,
    "sync_schedule": _SYNC_SCHEDULE,
    "fire_schedule": _FIRE_SCHEDULE,
    "list": _LIST,
}


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
        self._scripts: dict[str, Script] = {}
        self._listener: threading.Thread | None = None
        self._stop_listening = threading.Event()

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
            self._scripts = {}
        if listener is not None:
            listener.join(LISTEN_TICK * 20)
        if client is not None:
            client.close()

    def after_fork(self) -> None:
        # The parent's client, its sockets and its listening thread belong to
        # the parent; the child starts afresh and leaves them alone.
        self._lock = threading.Lock()
        self._client = None
        self._scripts = {}
        self._listener = None
        self._stop_listening = threading.Event()

    def enqueue(self, job: JobRecord) -> JobRecord:
        existing = self._run("enqueue", self.clock(), *_encode(job))
        if existing:
            return _decode(existing)
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

        return [str(job_id) for job_id in applied], [_decode(row) for row in claimed]

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
        expired = [_decode(row) for row in self._run("expired", now)]
        if not expired:
            return []

        # The error message is written in Python; the second script applies
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
        )

        return [_decode(row) for row in rows]

    def counts(self) -> dict[str, dict[Status, int]]:
        counts: dict[str, dict[Status, int]] = {}
        for field, number in self._redis().hgetall(self.prefix + "counts").items():
            status, _, queue = str(field).partition(":")
            if status in STATUSES:
                by_status = counts.setdefault(queue, self.empty_counts())
                by_status[status] = int(number)

        return counts

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
        # Slices keep each script short, so other clients are never blocked
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
            *_encode(job),
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

    def wait_for_change(self, timeout: float) -> None:
        self._listen()
        self._changes.wait(timeout)

    def _redis(self) -> redis.Redis:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = redis.Redis.from_url(self.url, decode_responses=True)
                    self._scripts = {
                        name: self._client.register_script(_PRELUDE + body)
                        for name, body in _SCRIPTS.items()
                    }
                client = self._client

        return client

    def _run(self, name: str, now: float, *arguments: str | int) -> Any:
        """Run one script with the prefix, this store's token and ``now``."""
        client = self._redis()
        script = self._scripts[name]

        return script(
            args=[self.prefix, self._token, _number(now), *arguments], client=client
        )

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


def _encode(job: JobRecord) -> list[str]:
    """The job's fields as name, value pairs; ``None`` fields are left out."""
    flat: list[str] = []
    for name in _FIELD_NAMES:
        value = getattr(job, name)
        if value is not None:
            flat += [name, _text(name, value)]

    return flat


def _decode(row: Sequence[str]) -> JobRecord:
    """A job from the flat reply of ``HGETALL`` inside a script."""
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
    """An outcome for the finish script: times as exact text, ``None``
    fields left out."""
    sent: dict[str, str | int] = {
        "job_id": outcome.job_id,
        "attempt": outcome.attempt,
        "status": outcome.status,
        "finished_at": _number(outcome.finished_at),
    }
    for name in ("result", "error", "progress", "attempt_errors"):
        value = getattr(outcome, name)
        if value is not None:
            sent[name] = value
    if outcome.retry_at is not None:
        sent["retry_at"] = _number(outcome.retry_at)

    return sent
