"""The Lua code of the Redis store: one function for each contract method
that must be atomic, loaded into the server as one Redis Functions library
(:data:`LIBRARY`). The module docstring of :mod:`.redis` describes the keys
they use.

A library, unlike ``EVALSHA`` scripts, defines its helpers once when it is
loaded rather than on every call, which matters on the enqueue path: the
helpers took a tenth of an enqueue's time in the server.
"""

from __future__ import annotations

import hashlib

# Helpers every function shares. Each call starts with begin(ARGV): ARGV[1]
# is the key prefix, ARGV[2] the token of the store that calls, ARGV[3] the
# time now. Redis runs one function at a time, so the call's values can live
# in the library's own variables.
PRELUDE = r"""
local P, TOKEN, NOW_TEXT, NOW
local function begin(args)
  P, TOKEN, NOW_TEXT = args[1], args[2], args[3]
  NOW = tonumber(NOW_TEXT)
end
local KEEP_PER_MINUTE = 7200
local FINISHED = {succeeded = true, failed = true, cancelled = true}
-- An inbox left behind by a thread that died is dropped after a minute.
local INBOX_TTL_MS = 60000

local function job_key(id)
  return P .. 'job:' .. id
end

local function ready_member(id, run_at)
  return string.format('%021.6f', tonumber(run_at)) .. ':' .. id
end

-- A job's hash as the JSON text of an object: one string for the client
-- to read, where the flat list of HGETALL is two for every field, each
-- parsed on its own by a client without a parser in C.
local function job_text(id)
  local row, job = redis.call('HGETALL', job_key(id)), {}
  for i = 1, #row, 2 do
    job[row[i]] = row[i + 1]
  end
  return cjson.encode(job)
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

-- Jobs running per queue are counts['running:' .. queue], kept by
-- set_status; per concurrency key they have a hash of their own.
local function count_running(key, by)
  if key then
    bump('running-by-key', key, by)
  end
end

local function stop_running(id, queue, key)
  redis.call('ZREM', P .. 'running', id)
  count_running(key, -1)
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

local function running_now(hash, field, extra, name)
  local stored = tonumber(redis.call('HGET', P .. hash, field)) or 0
  return stored + (extra[name] or 0)
end

-- Queue the scheduled jobs that are due, then move up to ``limit`` ready
-- jobs of ``lanes`` (a JSON list of queues, '' for all) to running for
-- ``worker``, as the limits allow. Returns each claimed job's job_text().
local function claim_jobs(worker, lanes_text, limits, limit, lease_expiry)
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
    return cap ~= nil
      and running_now('counts', 'running:' .. queue, by_queue, queue) >= cap
  end
  local function admit(queue, key, key_limit)
    if full(queue) then
      return false
    end
    if key and running_now('running-by-key', key, by_key, key)
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
  if lanes_text ~= '' then
    lanes = cjson.decode(lanes_text)
  end
  for _, queue in ipairs(lanes) do
    local lane = P .. 'ready'
    if queue then
      lane = P .. 'ready:' .. queue
    end
    -- Most claims admit the first jobs they read, so the first page is
    -- only as long as the claim; later pages skip past blocked jobs.
    local start, page = 0, limit - #chosen
    while #chosen < limit and not (queue and full(queue)) do
      local members = redis.call('ZRANGE', lane, start, start + page - 1)
      if #members == 0 then
        break
      end
      for _, member in ipairs(members) do
        local id = string.sub(member, string.find(member, ':', 1, true) + 1)
        local h = redis.call('HMGET', job_key(id), 'queue', 'concurrency_key',
          'concurrency_limit')
        if admit(h[1], h[2], h[3]) then
          chosen[#chosen + 1] = {id, member, h[1], h[2]}
          if #chosen == limit then
            break
          end
        end
      end
      start = start + page
      page = 100
    end
  end

  -- Each command counts, a hundred times a batch: what drop_waiting() and
  -- set_status() would do, written out so that the job's hash changes in
  -- one HSET and the ready sets lose the member the scan read.
  local claimed = {}
  for _, pick in ipairs(chosen) do
    local id, member, queue, key_name = pick[1], pick[2], pick[3], pick[4]
    local key = job_key(id)
    redis.call('ZREM', P .. 'ready', member)
    redis.call('ZREM', P .. 'ready:' .. queue, member)
    bump('counts', 'queued:' .. queue, -1)
    redis.call('ZREM', P .. 'status:queued', id)
    bump('counts', 'running:' .. queue, 1)
    redis.call('ZADD', P .. 'status:running', 0, id)
    redis.call('HSET', key, 'status', 'running', 'worker', worker,
      'started_at', NOW_TEXT, 'lease_expires_at', lease_expiry)
    redis.call('HINCRBY', key, 'attempts', 1)
    redis.call('ZADD', P .. 'running', lease_expiry, id)
    count_running(key_name, 1)
    claimed[#claimed + 1] = job_text(id)
  end
  return claimed
end

-- Idle worker threads wait on a list of their own, their inbox, with a
-- registration in the sorted set 'idle', scored by registration time so
-- that the longest idle is served first. A registration is the JSON text
-- {inbox, worker, queues, lease, expires}, made by the waiting thread,
-- which knows it to take it back. Whatever is pushed to an inbox removes
-- the registration in the same call, so an inbox receives at most one item
-- per registration: a job claimed for its worker, or '' for "look for
-- work".

-- A registration's details. One made by a version before registrations
-- were JSON is only its inbox's name: it reads as expired, which wakes
-- its thread to claim for itself.
local function read_registration(registration)
  local ok, waiter = pcall(cjson.decode, registration)
  if ok and type(waiter) == 'table' then
    return waiter
  end
  return {inbox = registration, expires = '0', queues = ''}
end

local function push_to_inbox(registration, waiter, item)
  local key = P .. 'inbox:' .. waiter.inbox
  redis.call('ZREM', P .. 'idle', registration)
  redis.call('RPUSH', key, item)
  redis.call('PEXPIRE', key, INBOX_TTL_MS)
end

local function wake_idle()
  for _, registration in ipairs(redis.call('ZRANGE', P .. 'idle', 0, -1)) do
    push_to_inbox(registration, read_registration(registration), '')
  end
end

local function serves(waiter, queue)
  if waiter.queues == '' then
    return true
  end
  for _, name in ipairs(cjson.decode(waiter.queues)) do
    if name == queue then
      return true
    end
  end
  return false
end

-- The registered idle threads, longest idle first, as {registration,
-- waiter} pairs. A registration that looks expired gets a wake-up instead
-- of a place in the list: its process died, or its clock is behind ours,
-- and either way a living thread then claims for itself.
local function live_waiters()
  local live = {}
  for _, registration in ipairs(redis.call('ZRANGE', P .. 'idle', 0, -1)) do
    local waiter = read_registration(registration)
    if tonumber(waiter.expires) < NOW then
      push_to_inbox(registration, waiter, '')
    else
      live[#live + 1] = {registration, waiter}
    end
  end
  return live
end

-- Remove job ``id`` from ``inbox``, where the enqueue put it for a thread
-- that then died before taking it. An inbox so handed a job has no expiry
-- (it would have cost the enqueue another command), so this also keeps it
-- from staying behind.
local function take_back(id, inbox)
  local key = P .. 'inbox:' .. inbox
  for _, item in ipairs(redis.call('LRANGE', key, 0, -1)) do
    -- A job is handed as an object; earlier versions handed a claimed
    -- one as the flat list of its fields.
    local handed = item ~= '' and cjson.decode(item)
    local found = handed and handed.id == id
    for i = 1, handed and #handed or 0, 2 do
      found = found or (handed[i] == 'id' and handed[i + 1] == id)
    end
    if found then
      redis.call('LREM', key, 1, item)
    end
  end
end

-- Claim one job for the first idle thread that may take it, and push it
-- to that thread's inbox. Returns whether a thread got one.
local function hand_to_idle(limits)
  for _, pair in ipairs(live_waiters()) do
    local registration, waiter = pair[1], pair[2]
    local claimed = claim_jobs(waiter.worker, waiter.queues, limits, 1,
      string.format('%.17g', NOW + tonumber(waiter.lease)))
    if #claimed > 0 then
      push_to_inbox(registration, waiter, claimed[1])
      return true
    end
  end
  return false
end

-- Jobs that succeeded or failed, counted per minute of their end in a hash
-- per minute that expires once no dashboard looks that far back.
local function count_finished(status, finished_at)
  if status == 'succeeded' or status == 'failed' then
    local key = P .. 'finished-per-minute:'
      .. string.format('%d', math.floor(tonumber(finished_at) / 60) * 60)
    redis.call('HINCRBY', key, status, 1)
    redis.call('EXPIRE', key, KEEP_PER_MINUTE)
  end
end

-- Tell other processes' stores; they ring their in-process bells.
local function announce(kind)
  redis.call('PUBLISH', P .. 'events', TOKEN .. ':' .. kind)
end

-- Announce, and for 'w' ("a job may have become ready") also send every
-- idle thread back to claiming.
local function publish(kind)
  if kind == 'w' then
    wake_idle()
  end
  announce(kind)
end

-- A job from the JSON object of its fields, as a table and as the flat
-- list of names and values that HSET takes.
local function read_job(text)
  local job, fields = cjson.decode(text), {}
  for name, value in pairs(job) do
    fields[#fields + 1] = name
    fields[#fields + 1] = value
  end
  return job, fields
end

local function store_job(job, fields)
  local id, queue, status = job.id, job.queue, job.status
  redis.call('HSET', job_key(id), unpack(fields))
  redis.call('ZADD', P .. 'jobs', 0, id)
  redis.call('ZADD', P .. 'queue:' .. queue, 0, id)
  redis.call('ZADD', P .. 'task:' .. job.task, 0, id)
  -- As set_status(id, queue, nil, status), less its HSET: the fields
  -- written above hold the status already.
  bump('counts', status .. ':' .. queue, 1)
  redis.call('ZADD', P .. 'status:' .. status, 0, id)
  if status == 'running' then
    redis.call('ZADD', P .. 'running', job.lease_expires_at or NOW_TEXT, id)
    count_running(job.concurrency_key, 1)
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

-- The enqueue's common path (hand_straight) stores a job that starts at
-- once as its record alone and lists its id in 'unindexed', because each
-- command it saves is time the job waits to start. The listing indexes,
-- the counts and the lease entry follow here, at the start of the next
-- call that reads them or changes the job (see FUNCTIONS_LEAVING_PENDING),
-- so that no caller ever sees them missing.
local function index_pending()
  local ids = redis.call('LRANGE', P .. 'unindexed', 0, -1)
  if #ids == 0 then
    return
  end
  redis.call('DEL', P .. 'unindexed')
  for _, id in ipairs(ids) do
    local h = redis.call('HMGET', job_key(id), 'status', 'queue', 'task',
      'lease_expires_at')
    if h[1] then
      redis.call('ZADD', P .. 'jobs', 0, id)
      redis.call('ZADD', P .. 'queue:' .. h[2], 0, id)
      redis.call('ZADD', P .. 'task:' .. h[3], 0, id)
      bump('counts', h[1] .. ':' .. h[2], 1)
      redis.call('ZADD', P .. 'status:' .. h[1], 0, id)
      if h[1] == 'running' then
        redis.call('ZADD', P .. 'running', h[4], id)
      end
    end
  end
end
"""

# ARGV[4] queue limits (JSON), [5] the job (JSON, as _encode writes it).
_ENQUEUE = r"""
-- Decoded only where needed: most apps set no limits ('{}').
local limits_text = ARGV[4]
local job, fields = read_job(ARGV[5])

-- The longest idle thread, taken off the idle set, if it is alive and
-- serves ``queue``: one command in the common case. Otherwise it goes back,
-- and the job takes the general way, which looks at every idle thread.
local function idle_taker(queue)
  local first = redis.call('ZPOPMIN', P .. 'idle')
  if #first == 0 then
    return nil
  end
  local waiter = read_registration(first[1])
  if tonumber(waiter.expires) >= NOW and serves(waiter, queue) then
    return waiter
  end
  redis.call('ZADD', P .. 'idle', first[2], first[1])
  return nil
end

-- The common case, kept cheap: nothing else is ready and the job has no
-- limit to check, so a claim would take this very job. Store it already
-- running for an idle thread instead of queued and then claimed.
local function hand_straight()
  if job.status ~= 'queued' or tonumber(job.run_at) > NOW
      or job.concurrency_key
      or (limits_text ~= '{}' and cjson.decode(limits_text)[job.queue] ~= nil)
      or redis.call('ZCARD', P .. 'ready') > 0
      or #redis.call('ZRANGEBYSCORE', P .. 'delayed', '-inf', NOW_TEXT,
        'LIMIT', 0, 1) > 0 then
    return false
  end
  local waiter = idle_taker(job.queue)
  if not waiter then
    return false
  end
  job.status = 'running'
  job.worker = waiter.worker
  job.started_at = NOW_TEXT
  job.lease_expires_at = string.format('%.17g', NOW + tonumber(waiter.lease))
  job.attempts = tostring((tonumber(job.attempts) or 0) + 1)
  -- For the recovery of the job, should the thread die before taking it:
  -- see take_back().
  job.inbox = waiter.inbox
  local running = {}
  for name, value in pairs(job) do
    running[#running + 1] = name
    running[#running + 1] = value
  end
  redis.call('HSET', job_key(job.id), unpack(running))
  if job.unique_key then
    redis.call('HSET', P .. 'unique', job.unique_key, job.id)
  end
  redis.call('RPUSH', P .. 'unindexed', job.id)
  -- As job_text() would give it, without reading back what was just
  -- written.
  redis.call('RPUSH', P .. 'inbox:' .. waiter.inbox, cjson.encode(job))
  return true
end

if job.unique_key and not FINISHED[job.status] then
  local existing = redis.call('HGET', P .. 'unique', job.unique_key)
  if existing then
    return job_text(existing)
  end
end
if hand_straight() then
  -- No announcement: a job that went straight to running concerns no
  -- idle thread, and no Job.wait, which waits for it to end.
  return {}
end
-- Before any claim counts what runs.
index_pending()
store_job(job, fields)
if job.status == 'queued' and tonumber(job.run_at) <= NOW
    and hand_to_idle(cjson.decode(limits_text)) then
  announce('c')
else
  -- Every idle thread just tried to claim for itself and could not: only
  -- other waiters need to hear of the job.
  announce('w')
end
return {}
"""

# ARGV[4] worker, [5] queues (JSON, '' for all), [6] queue limits (JSON),
# [7] lease expiry, [8] registration (JSON: inbox, worker, queues, lease
# seconds, expires). Claims a job at once if one is ready; else registers
# the thread as idle.
_WAIT = r"""
local claimed = claim_jobs(ARGV[4], ARGV[5], cjson.decode(ARGV[6]), 1, ARGV[7])
if #claimed > 0 then
  publish('c')
  return claimed[1]
end
redis.call('ZADD', P .. 'idle', NOW_TEXT, ARGV[8])
return {}
"""

# ARGV[4] registration, [5] inbox. A wait that timed out: unregister, and
# take what was pushed in the meantime, if anything.
_UNWAIT = r"""
redis.call('ZREM', P .. 'idle', ARGV[4])
return redis.call('LPOP', P .. 'inbox:' .. ARGV[5])
"""

# ARGV[4...] registrations of this process: wake those still registered.
_WAKE = r"""
for i = 4, #ARGV do
  if redis.call('ZSCORE', P .. 'idle', ARGV[i]) then
    push_to_inbox(ARGV[i], read_registration(ARGV[i]), '')
  end
end
return 0
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
    'concurrency_key', 'unique_key', 'priority', 'run_at')
  if h[1] == 'running' and h[2] == worker and tonumber(h[3]) == o.attempt then
    local queue = h[4]
    -- What stop_running() and set_status() would do, written out so that
    -- the job's hash changes in one HSET and one HDEL: each command counts,
    -- a hundred times a batch.
    redis.call('ZREM', P .. 'running', id)
    count_running(h[5], -1)
    bump('counts', 'running:' .. queue, -1)
    redis.call('ZREM', P .. 'status:running', id)
    bump('counts', o.status .. ':' .. queue, 1)
    redis.call('ZADD', P .. 'status:' .. o.status, 0, id)
    local set, unset = {'status', o.status}, {'worker', 'lease_expires_at'}
    local run_at = h[8]
    if o.retry_at then
      run_at = o.retry_at
      set[#set + 1] = 'run_at'
      set[#set + 1] = run_at
      unset[#unset + 1] = 'finished_at'
    else
      set[#set + 1] = 'finished_at'
      set[#set + 1] = o.finished_at
    end
    for _, name in ipairs({'attempt_errors', 'progress', 'result', 'error',
        'log'}) do
      if o[name] then
        set[#set + 1] = name
        set[#set + 1] = o[name]
      elseif name ~= 'attempt_errors' and name ~= 'progress' then
        -- A missing result, error or log is cleared; missing attempt
        -- errors and progress keep what the job had.
        unset[#unset + 1] = name
      end
    end
    redis.call('HSET', key, unpack(set))
    redis.call('HDEL', key, unpack(unset))
    if FINISHED[o.status] then
      redis.call('ZADD', P .. 'finished', o.finished_at, id)
      count_finished(o.status, o.finished_at)
      free_unique(id, h[6])
    else
      place_waiting(id, o.status, queue, h[7], run_at)
    end
    wake = wake or h[5] ~= false or limits[queue] ~= nil
    applied[#applied + 1] = id
  end
end

local claimed = {}
if limit >= 0 then
  claimed = claim_jobs(worker, ARGV[6], limits, limit, ARGV[9])
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
  found[#found + 1] = job_text(id)
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
    'unique_key', 'inbox')
  if h[1] == 'running' and h[2] == ARGV[i + 1] and h[3] == ARGV[i + 2]
      and tonumber(h[4]) < NOW then
    if h[10] then
      take_back(id, h[10])
      redis.call('HDEL', key, 'inbox')
    end
    if failure == '' then
      requeue(id, h[5], h[6], h[7], h[8])
      redis.call('HINCRBY', key, 'recoveries', 1)
    else
      stop_running(id, h[5], h[6])
      set_status(id, h[5], 'running', 'failed')
      redis.call('HSET', key, 'finished_at', NOW_TEXT, 'error', failure)
      redis.call('ZADD', P .. 'finished', NOW_TEXT, id)
      count_finished('failed', NOW_TEXT)
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

# ARGV[4] name, [5] due time, [6] next run time, [7] the job (JSON).
_FIRE_SCHEDULE = r"""
if not redis.call('HGET', P .. 'schedules', ARGV[4])
    or redis.call('HGET', P .. 'schedule-runs', ARGV[4]) ~= ARGV[5] then
  return 0
end
redis.call('HSET', P .. 'schedule-runs', ARGV[4], ARGV[6])
store_job(read_job(ARGV[7]))
publish('w')
return 1
"""

# ARGV[4] queue, [5] status, [6] task ('' for any), [7] offset, [8] limit,
# [9] before, [10] after (ids, '' for none). The index sets hold ids at one
# score, so they sort by id and a cursor is a bound of a range by text:
# newest first below ``before``; with ``after``, oldest first above it, so
# that the page closest to it comes first (the caller turns it round).
_LIST = r"""
local queue, status, task = ARGV[4], ARGV[5], ARGV[6]
local skip, want = tonumber(ARGV[7]), tonumber(ARGV[8])
local upper, lower, oldest_first = '+', '-', ARGV[10] ~= ''
if ARGV[9] ~= '' then
  upper = '(' .. ARGV[9]
end
if oldest_first then
  lower = '(' .. ARGV[10]
end
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

local function slice(start, count)
  if oldest_first then
    return redis.call('ZRANGEBYLEX', index, lower, upper, 'LIMIT', start, count)
  end
  return redis.call('ZREVRANGEBYLEX', index, upper, lower, 'LIMIT', start, count)
end

local found = {}
if filters <= 1 then
  if want > 0 then
    for _, id in ipairs(slice(skip, want)) do
      found[#found + 1] = job_text(id)
    end
  end
  return found
end

local start = 0
while #found < want do
  local ids = slice(start, 200)
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
        found[#found + 1] = job_text(id)
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

_COUNTS = r"""
return redis.call('HGETALL', P .. 'counts')
"""

SCRIPTS = {
    "enqueue": _ENQUEUE,
    "wait": _WAIT,
    "unwait": _UNWAIT,
    "wake": _WAKE,
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
    "counts": _COUNTS,
}

#: Functions that start without index_pending(): they neither read the
#: listing indexes, the counts or the lease entries, nor change a job's
#: status. The enqueue calls it itself, off its common path.
FUNCTIONS_LEAVING_PENDING = frozenset(
    {"enqueue", "unwait", "wake", "heartbeat", "set_progress", "sync_schedule"}
)

#: Changes with the code, so that processes running different versions of
#: Flask-Offload against one server each call their own.
VERSION = hashlib.sha1(
    "".join([PRELUDE, *SCRIPTS.values(), *sorted(FUNCTIONS_LEAVING_PENDING)]).encode(),
    usedforsecurity=False,
).hexdigest()[:12]
LIBRARY_NAME = f"flask_offload_{VERSION}"
#: The server-side name of each function, by the name the store calls it by.
FUNCTIONS = {name: f"{LIBRARY_NAME}_{name}" for name in SCRIPTS}
#: The library's source, for ``FUNCTION LOAD``. In each function ``ARGV`` is
#: its list of arguments, as it would be in a script.
LIBRARY = "\n".join(
    [
        f"#!lua name={LIBRARY_NAME}",
        PRELUDE,
        *(
            f"redis.register_function('{FUNCTIONS[name]}', function(_, ARGV)\n"
            f"begin(ARGV)\n"
            f"{'' if name in FUNCTIONS_LEAVING_PENDING else 'index_pending()'}\n"
            f"{body}end)\n"
            for name, body in SCRIPTS.items()
        ),
    ]
)
