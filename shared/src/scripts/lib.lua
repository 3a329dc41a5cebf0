-- Helpers prepended to every script (see scripts.rs).
--
-- A job lives in column hashes keyed by its id (see keys.rs), so that a batch
-- of jobs costs one HMGET/HSET per column instead of commands per job:
--   spec    id -> tenant \t type \t queue \t max_attempts \t timeout_ms
--                 \t backoff_base_ms \t backoff_cap_ms \t retention_secs (or '')
--                 \t created_ms \t payload   (written once; schema 5 and older lack retention_secs)
--   state   id -> status \t attempts \t due_ms \t cancel(0|1) \t expires_ms
--                 \t runs \t flags \t total
--                 then its last HISTORY_KEPT transitions: \n status \t attempt \t at_ms \t error
--   result  id -> the result JSON of a succeeded job (absent when null)
-- `runs` counts the job's claims and only ever grows: the run a claim starts is
-- its fencing token, and every outcome, heartbeat and hand-back names it.
-- `attempts` is what users see: attempts that count against max_attempts.
-- `flags`: `l` while the id is on its ready list (a cancelled job's id stays
-- there until CLAIM pops and skips it, so cancel never scans the list); `o`
-- while the latest run's outcome is still accepted (from its claim until it is
-- recorded, handed back, cancelled or retried; a reaped run stays open until
-- another claim, so a worker that comes back with a finished outcome is heard).
-- `total`: transitions ever recorded; the history keeps the last HISTORY_KEPT.
-- The history rides in the state value: a transition reads and rewrites one
-- field, instead of also inserting into a history hash.
-- Per tenant, a count of jobs by queue and status: `t:<tenant>:counts`, fields
-- `queue \t status`. Each transition moves one job from one count to another.
-- Event lines: id \t tenant \t type \t queue \t status \t attempt \t at_ms \t error,
-- or the id alone when everything after it is as on the line before (see events.rs).
-- Error texts reach the scripts without tabs or newlines (the callers strip them).

local HISTORY_KEPT = 50

-- Ready jobs wait per queue and tenant (`q:<queue>:t:<tenant>:ready`), so that
-- tenants take turns: `q:<queue>:ring` lists the tenants with ready jobs there,
-- each once, and `ready` lists the queues with ready jobs, each once; CLAIM
-- rotates both. `due` scores each queue with scheduled or retrying jobs by the
-- earliest due time, `busy` holds the queues with leases: no script walks a
-- queue or tenant that has nothing for it, however many names exist.

-- Leases live in a per-queue hash `running` (id -> expiry ms). Redis keeps a
-- small hash as a listpack, where every HSET and HDEL scans it whole: with a
-- worker's batches in flight (100+ leases) the scans cost more than the rest
-- of a claim. One field whose value is longer than hash-max-listpack-value
-- (64 by default) turns the hash into a hash table for as long as the key
-- lives, and the pin keeps it alive. Its value, all nines, is an expiry that
-- never comes, so the reaper passes over it (keys.rs: RUNNING_PIN).
local RUNNING_PIN, RUNNING_PIN_VALUE = '~', string.rep('9', 80)

-- Server time in milliseconds: one clock for every worker and API instance.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Lua turns numbers into strings with sprintf, which dominates string building:
-- each distinct count (attempts) is converted once per call.
local strings = {}
local function str(n)
  local s = strings[n]
  if not s then
    s = tostring(n)
    strings[n] = s
  end
  return s
end

-- `history` with its first line dropped, for as long as it holds more than
-- `keep` lines (`lines` of them now). O(line length) per dropped line.
local function trimmed(history, lines, keep)
  while lines > keep do
    local cut = string.find(history, '\n', 2, true)
    if not cut then return '' end
    history = string.sub(history, cut)
    lines = lines - 1
  end
  return history
end

-- status, attempts, due, cancel, expires, history, runs, flags, total
-- (nil when the job is gone). All stay strings: they are mostly copied or
-- compared, and Lua turns strings into numbers with strtod, which would
-- dominate the scripts' own work.
-- `history` keeps its leading newline, ready to be carried into the next value;
-- it is cut at a position capture, because matching it with `(.*)` walks the
-- pattern engine through it character by character.
-- A header of schema 3 (five fields, from before fencing tokens) reads as a run
-- of `attempts`, with the flags it implied; its next transition writes schema 4.
local function parse_state(s)
  if not s then return nil end
  local status, attempts, due, cancel, expires, runs, flags, total, rest =
    string.match(s, '^(%a+)\t(%d+)\t(%d+)\t(%d)\t(%d+)\t(%d+)\t(%l*)\t(%d+)()')
  if status then
    return status, attempts, due, cancel, expires, string.sub(s, rest), runs, flags, total
  end
  status, attempts, due, cancel, expires, rest = string.match(s, '^(%a+)\t(%d+)\t(%d+)\t(%d)\t(%d+)()')
  if not status then return nil end
  local history = string.sub(s, rest)
  local _, lines = string.gsub(history, '\n', '')
  flags = (status == 'queued' and 'l') or (status == 'running' and 'o') or ''
  return status, attempts, due, cancel, expires, trimmed(history, lines, HISTORY_KEPT), attempts, flags, tostring(lines)
end

-- Whether `flags` holds `flag` ('l' or 'o').
local function has(flags, flag)
  return string.find(flags, flag, 1, true) ~= nil
end

-- `flags` with `l` set or cleared, keeping `o`.
local function listed(flags, on)
  local open = has(flags, 'o')
  if on then return open and 'lo' or 'l' end
  return open and 'o' or ''
end

-- `flags` with `o` cleared, keeping `l`.
local function closed(flags)
  return has(flags, 'l') and 'l' or ''
end

-- The count after `n` (a decimal string: attempts, runs, totals), converted
-- once per distinct value.
local successors = {}
local function succ(n)
  local s = successors[n]
  if not s then
    s = tostring(tonumber(n) + 1)
    successors[n] = s
  end
  return s
end

-- `tenant \t type \t queue`, from a spec.
local function spec_meta(spec)
  return string.match(spec, '^[^\t]*\t[^\t]*\t[^\t]*')
end

-- `tenant \t type \t queue` and the queue, from a spec.
local function spec_meta_queue(spec)
  return string.match(spec, '^([^\t]*\t[^\t]*\t([^\t]*))')
end

-- Calls a variadic command on `key` with `items`, in chunks small enough for
-- Lua's unpack limit, so no batch size can wedge a script. `step` keeps pairs whole.
local function chunked(cmd, key, items, step)
  local chunk = 512 * (step or 1)
  for i = 1, #items, chunk do
    redis.call(cmd, key, unpack(items, i, math.min(i + chunk - 1, #items)))
  end
end

-- HMGET in chunks; returns one value (or false) per field, in order.
local function hmget(key, fields)
  local total = #fields
  if total == 0 then return {} end
  if total <= 512 then return redis.call('HMGET', key, unpack(fields)) end
  local out = {}
  for i = 1, total, 512 do
    local part = redis.call('HMGET', key, unpack(fields, i, math.min(i + 511, total)))
    for j = 1, #part do out[i + j - 1] = part[j] end
  end
  return out
end

-- Collects the writes of one call: a transition per job, lists to push, and the
-- event lines, so that each hash and list gets one command per call.
-- `nstate` and `nlines` count what `state` and `lines` hold: `#t` is a binary
-- search in Lua 5.1, which a per-job append would pay every time.
local function writer(tag, now)
  return {
    tag = tag, now = tostring(now), state = {}, nstate = 0, result = {}, lists = {}, order = {}, ready = {}, freed = {},
    lines = {}, nlines = 0, counts = {}, buckets = {},
  }
end

-- Appends one event line; a line that repeats the previous one's fields carries the id alone.
-- Metas, statuses and attempts are interned strings, so the comparisons are pointer checks.
local function event(w, id, meta, status, attempt, err)
  local n = w.nlines + 1
  w.nlines = n
  if meta == w.last_meta and status == w.last_status and attempt == w.last_attempt and err == w.last_err then
    w.lines[n] = id
  else
    w.last_meta, w.last_status, w.last_attempt, w.last_err = meta, status, attempt, err
    w.lines[n] = id .. '\t' .. meta .. '\t' .. status .. '\t' .. attempt .. '\t' .. w.now .. '\t' .. (err or '')
  end
end

local function push(w, key, value)
  local list = w.lists[key]
  if not list then
    list = { n = 0 }
    w.lists[key] = list
    w.order[#w.order + 1] = key
  end
  local n = list.n + 1
  list[n] = value
  list.n = n
end

-- The tenant of a meta (`tenant \t type \t queue`), worked out once per meta.
local tenants_of = {}
local function tenant_of(meta)
  local tenant = tenants_of[meta]
  if not tenant then
    tenant = string.match(meta, '^[^\t]*')
    tenants_of[meta] = tenant
  end
  return tenant
end

local function ready_key(tag, queue, tenant)
  return tag .. ':q:' .. queue .. ':t:' .. tenant .. ':ready'
end

-- Gives `tenant` its turns on `queue`, whose ready list for it was empty until
-- now, and `queue` its turns among the queues with ready jobs.
local function enlist(tag, queue, tenant)
  if redis.call('RPUSH', tag .. ':q:' .. queue .. ':ring', tenant) == 1 then
    redis.call('RPUSH', tag .. ':ready', queue)
  end
end

-- Queues `id` (of `meta`) at the back of its tenant's ready list on `queue`, at flush.
local function push_ready(w, queue, meta, id)
  local tenant = tenant_of(meta)
  local key = ready_key(w.tag, queue, tenant)
  if not w.lists[key] then w.ready[key] = { queue, tenant } end
  push(w, key, id)
end

-- Puts `id` back at the front of its tenant's ready list on `queue`, now.
local function push_front(tag, queue, tenant, id)
  if redis.call('LPUSH', ready_key(tag, queue, tenant), id) == 1 then enlist(tag, queue, tenant) end
end

-- Notes that `queue` has a job due at `at` (ms): the queue's score in `due` is
-- its earliest such time.
local function due_at(tag, queue, at)
  redis.call('ZADD', tag .. ':due', 'LT', at, queue)
end

-- After leases of `queue` were deleted: the queue leaves `busy` once only the pin is left.
local function idle_check(tag, queue)
  if redis.call('HLEN', tag .. ':q:' .. queue .. ':running') <= 1 then redis.call('SREM', tag .. ':busy', queue) end
end

-- Adds `delta` to the count of `meta`'s tenant and queue in `status`. Metas of
-- one batch are mostly the same string (Lua interns strings), so this is two
-- table lookups; flush turns the net changes into one HINCRBY each.
local function count(w, meta, status, delta)
  local c = w.counts[meta]
  if not c then
    c = {}
    w.counts[meta] = c
  end
  c[status] = (c[status] or 0) + delta
end

-- Records one transition from status `from`: the new state with its history line
-- appended (the oldest dropped past HISTORY_KEPT), and the event line. `due` and
-- `expires` are strings or numbers (0 = live); `cancel` is '0' or '1'; `runs`,
-- `flags`, `total` and `history` are as parse_state returned them, `runs` and
-- `flags` already as the new state carries them.
local function transition(w, id, meta, from, status, attempts, due, cancel, expires, runs, flags, total, history, err)
  -- Per job, so `count`, `event` and the caches are inlined here: a Lua call
  -- costs more than what it does.
  local c = w.counts[meta]
  if not c then
    c = {}
    w.counts[meta] = c
  end
  c[from] = (c[from] or 0) - 1
  c[status] = (c[status] or 0) + 1
  local a = strings[attempts] or str(attempts)
  local t = successors[total] or succ(total)
  -- At HISTORY_KEPT (50) transitions and beyond, the oldest line makes room.
  -- Totals are decimal strings: two digits from '50', or three and more.
  local n = #total
  if n > 2 or (n == 2 and total >= '50') then history = trimmed(history, HISTORY_KEPT, HISTORY_KEPT - 1) end
  local st, n = w.state, w.nstate
  st[n + 1] = id
  st[n + 2] = status .. '\t' .. a .. '\t' .. due .. '\t' .. cancel .. '\t' .. expires .. '\t' .. runs .. '\t' .. flags ..
    '\t' .. t .. history .. '\n' .. status .. '\t' .. a .. '\t' .. w.now .. '\t' .. (err or '')
  w.nstate = n + 2
  -- `event`, inlined.
  local l = w.nlines + 1
  w.nlines = l
  if meta == w.last_meta and status == w.last_status and a == w.last_attempt and err == w.last_err then
    w.lines[l] = id
  else
    w.last_meta, w.last_status, w.last_attempt, w.last_err = meta, status, a, err
    w.lines[l] = id .. '\t' .. meta .. '\t' .. status .. '\t' .. a .. '\t' .. w.now .. '\t' .. (err or '')
  end
  if expires ~= 0 then
    -- Deleted by REAP once its retention ends (one-second buckets). A call's jobs
    -- mostly share one expiry: its bucket is worked out once.
    local bucket = w.buckets[expires]
    if not bucket then
      local second = math.floor(tonumber(expires) / 1000)
      bucket = { key = w.tag .. ':gc:' .. second, second = second }
      w.buckets[expires] = bucket
      if not w.gc_min or second < w.gc_min then w.gc_min = second end
    end
    push(w, bucket.key, id)
  end
end

-- Rewrites a state's header with new flags, recording no transition (CLAIM
-- popping a cancelled job's id clears its `l`).
local function reflag(w, id, status, attempts, due, cancel, expires, runs, flags, total, history)
  local st, n = w.state, w.nstate
  st[n + 1] = id
  st[n + 2] = status .. '\t' .. attempts .. '\t' .. due .. '\t' .. cancel .. '\t' .. expires .. '\t' .. runs .. '\t' ..
    flags .. '\t' .. total .. history
  w.nstate = n + 2
end

-- Appends a call's transitions to the events stream as one entry, trimmed approximately.
local function emit(tag, maxlen, text)
  if text ~= '' then
    redis.call('XADD', tag .. ':events', 'MAXLEN', '~', maxlen, '*', 'e', text)
  end
end

-- Wakes idle workers blocked on the wake stream.
local function wake(tag)
  redis.call('XADD', tag .. ':wake', 'MAXLEN', '~', 100, '*', 'w', '1')
end

local function counts_key(tag, tenant)
  return tag .. ':t:' .. tenant .. ':counts'
end

-- Statuses of live (unfinished) jobs, which a tenant's `live` usage counts.
local LIVE = { queued = true, scheduled = true, running = true, retrying = true }

-- Writes what a writer collected, and appends its events. Besides the counts,
-- each tenant's `live` usage follows its jobs in and out of the live statuses,
-- and its `bytes` usage the records deleted (`w.freed`).
local function flush(w, maxlen)
  local tag = w.tag
  local live = {}
  for meta, deltas in pairs(w.counts) do
    local tenant, queue = string.match(meta, '^([^\t]*)\t[^\t]*\t(.*)$')
    local key = counts_key(tag, tenant)
    for status, delta in pairs(deltas) do
      if delta ~= 0 then
        redis.call('HINCRBY', key, queue .. '\t' .. status, delta)
        if LIVE[status] then live[tenant] = (live[tenant] or 0) + delta end
      end
    end
  end
  for tenant, delta in pairs(live) do
    if delta ~= 0 then redis.call('HINCRBY', tag .. ':t:' .. tenant .. ':usage', 'live', delta) end
  end
  for tenant, freed in pairs(w.freed) do
    redis.call('HINCRBY', tag .. ':t:' .. tenant .. ':usage', 'bytes', -freed)
  end
  if #w.state > 0 then chunked('HSET', tag .. ':state', w.state, 2) end
  if #w.result > 0 then chunked('HSET', tag .. ':result', w.result, 2) end
  for _, key in ipairs(w.order) do
    local items = w.lists[key]
    local first = math.min(items.n, 512)
    -- The first chunk's RPUSH says whether the list was empty: then its tenant
    -- starts taking turns (`enlist`).
    local length = redis.call('RPUSH', key, unpack(items, 1, first))
    if first < items.n then
      for i = first + 1, items.n, 512 do redis.call('RPUSH', key, unpack(items, i, math.min(i + 511, items.n))) end
    end
    local ready = w.ready[key]
    if ready and length == first then enlist(tag, ready[1], ready[2]) end
  end
  if w.gc_min then
    -- The sweep starts from the earliest bucket that holds anything.
    local cursor = tonumber(redis.call('GET', tag .. ':gc:cursor'))
    if not cursor or w.gc_min < cursor then redis.call('SET', tag .. ':gc:cursor', w.gc_min) end
  end
  emit(tag, maxlen, table.concat(w.lines, '\n'))
  w.state, w.result, w.lists, w.order, w.lines, w.counts, w.buckets, w.gc_min = {}, {}, {}, {}, {}, {}, {}, nil
  w.ready, w.freed = {}, {}
  w.nstate, w.nlines, w.last_meta = 0, 0, nil
end

-- The tenant's token bucket (keys.rs `rate_limit`) on the server's clock, so
-- that every API instance shares one limit: the tokens it holds now (math.huge
-- without a limit). `spend(tag, tenant, n, …)` then takes n of them.
local function tokens(tag, tenant, rate, burst, now)
  if rate <= 0 then return math.huge end
  local kept = redis.call('HMGET', tag .. ':rl:' .. tenant, 't', 'ts')
  return math.min(burst, (tonumber(kept[1]) or burst) + (now - (tonumber(kept[2]) or now)) * rate / 1000)
end

local function spend(tag, tenant, n, held, rate, burst, now)
  if rate <= 0 or n == 0 then return end
  local bucket = tag .. ':rl:' .. tenant
  redis.call('HSET', bucket, 't', held - n, 'ts', now)
  redis.call('PEXPIRE', bucket, math.ceil((burst - held + n) * 1000 / rate) + 1000)
end

-- Ms until `n` tokens are there, when `held` is short of them.
local function wait_for(n, held, rate)
  return math.ceil((n - held) * 1000 / rate)
end

-- Deletes the records of `ids`, which ended with `ended[i]`, with their listing
-- and failed-index entries and counts (in `w`, for the caller to flush); marks
-- the `tenant \t queue` pairs that lost records in `emptied` (see `free_queues`).
local function forget(w, ids, ended, emptied)
  local tag = w.tag
  local specs = hmget(tag .. ':spec', ids)
  local indexes, order = {}, {}
  local function unindex(key, id)
    if not indexes[key] then
      indexes[key] = {}
      order[#order + 1] = key
    end
    table.insert(indexes[key], id)
  end
  for i, spec in ipairs(specs) do
    if spec then
      local meta, queue = spec_meta_queue(spec)
      local tenant = tenant_of(meta)
      count(w, meta, ended[i], -1)
      w.freed[tenant] = (w.freed[tenant] or 0) + #spec
      unindex(tag .. ':t:' .. tenant .. ':jobs', ids[i])
      if ended[i] == 'failed' then unindex(tag .. ':q:' .. queue .. ':t:' .. tenant .. ':failed', ids[i]) end
      emptied[tenant .. '\t' .. queue] = true
    end
  end
  for _, key in ipairs(order) do chunked('ZREM', key, indexes[key]) end
  for _, column in ipairs({':spec', ':state', ':result'}) do chunked('HDEL', tag .. column, ids) end
end

-- Deletes the records whose retention ended: the ids in the one-second buckets
-- `gc:<second>` of past seconds, oldest first, from `gc:cursor` on, then the
-- expired head of the current second's bucket, at most `budget` ids in all
-- (see `forget`). ACK runs it too, with a budget in proportion to the jobs
-- it finishes, so deleting keeps up with finishing at any rate.
-- Returns the records deleted, 1 if it stopped at its bounds (0 otherwise), and
-- the `tenant \t queue` pairs that lost records (see `free_queues`).
local function sweep(w, now, budget)
  local tag = w.tag
  local swept, steps, emptied = 0, 0, {}
  local cursor = tonumber(redis.call('GET', tag .. ':gc:cursor'))
  if not cursor then return 0, 0, emptied end
  local current = math.floor(now / 1000)
  if cursor > current then return 0, 0, emptied end

  -- Deletes the records of `ids` (taken off a bucket) that ended and expired; a
  -- job retried since is live again and stays, and one deleted already (by
  -- SUCCEEDED_MAX_PER_QUEUE) is gone. A job that ended twice within one second
  -- is in the bucket twice: deleted once.
  local function delete(ids, states)
    local gone, ended, seen = {}, {}, {}
    for i, id in ipairs(ids) do
      local status, _, _, _, expires = parse_state(states[i])
      if not seen[id] and (status == 'succeeded' or status == 'failed' or status == 'cancelled')
        and tonumber(expires) <= now then
        seen[id] = true
        gone[#gone + 1] = id
        ended[#ended + 1] = status
      end
    end
    if #gone == 0 then return end
    forget(w, gone, ended, emptied)
    swept = swept + #gone
  end

  while cursor < current and budget > 0 and steps < 3600 do
    local bucket = tag .. ':gc:' .. cursor
    local ids = redis.call('LPOP', bucket, budget)
    if ids then
      budget = budget - #ids
      delete(ids, hmget(tag .. ':state', ids))
    end
    if redis.call('EXISTS', bucket) == 1 then break end
    cursor = cursor + 1
    steps = steps + 1
  end
  if cursor == current and budget > 0 then
    -- The current second still fills; ids mostly arrive in expiry order, so its
    -- expired head can go now (up to the first id not yet due).
    local bucket = tag .. ':gc:' .. cursor
    local ids = redis.call('LRANGE', bucket, 0, budget - 1)
    if #ids > 0 then
      local states = hmget(tag .. ':state', ids)
      local due = 0
      for i = 1, #ids do
        local status, _, _, _, expires = parse_state(states[i])
        local finished = status == 'succeeded' or status == 'failed' or status == 'cancelled'
        if finished and tonumber(expires) > now then break end
        due = i
      end
      if due > 0 then
        redis.call('LTRIM', bucket, due, -1)
        budget = budget - due
        delete({unpack(ids, 1, due)}, {unpack(states, 1, due)})
      end
    end
  end
  redis.call('SET', tag .. ':gc:cursor', cursor)
  local more = 0
  if budget <= 0 or steps >= 3600 then more = 1 end
  return swept, more, emptied
end

-- A tenant's queue with no job left in any status no longer counts against its
-- cap (`t:<tenant>:queues`), and its zero counts go. Run after the counts are flushed.
local STATUSES = {'queued', 'scheduled', 'running', 'retrying', 'succeeded', 'failed', 'cancelled'}
local function free_queues(tag, emptied)
  for pair in pairs(emptied) do
    local tenant, queue = string.match(pair, '^([^\t]*)\t(.*)$')
    local fields = {}
    for i, status in ipairs(STATUSES) do fields[i] = queue .. '\t' .. status end
    local key = counts_key(tag, tenant)
    local left = 0
    for _, n in ipairs(redis.call('HMGET', key, unpack(fields))) do left = left + (tonumber(n) or 0) end
    if left == 0 then
      redis.call('HDEL', key, unpack(fields))
      redis.call('SREM', tag .. ':t:' .. tenant .. ':queues', queue)
    end
  end
end
