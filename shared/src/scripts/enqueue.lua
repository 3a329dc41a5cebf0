-- ENQUEUE: creates one or more jobs atomically, honouring an optional Idempotency-Key.
-- Every time it stores (creation, due time, the scheduled-or-queued decision,
-- the listing score, history and events) is Redis's own, like every other
-- transition's, so an API host with a skewed clock can neither run a delayed
-- job early nor misorder a job's history. The caller sends each job's strings
-- once; the script joins them with the time and files them away.
-- KEYS[1]  the events stream (routes the call)
-- ARGV[1]  tag `{prefix}`   ARGV[2] events maxlen
-- ARGV[3]  idempotency key name ('' = none)   ARGV[4] request fingerprint
-- ARGV[5]  idempotency ttl, seconds   ARGV[6] the ids, comma-separated (kept with the key)
-- ARGV[7]  tenant   ARGV[8] job count n   ARGV[9] rate limit, tokens/s (0 = none)   ARGV[10] burst
--   (a job costs a token, or one per 4 KiB of its spec if more)
-- ARGV[11] the most queues the tenant may have jobs in (0 = no cap)
-- ARGV[12] the most live (unfinished) jobs it may have   ARGV[13] the most bytes of
--   stored jobs (specs: payloads with their settings) it may have (0 = no cap)
-- ARGV[14] the most email recipients its jobs may address in a UTC day (0 = no cap)
-- ARGV[15] the email recipients these jobs address
-- ARGV[16..] n × 4: id, head (tenant \t type \t queue \t max_attempts \t timeout_ms
--   \t backoff_base_ms \t backoff_cap_ms \t retention_secs or ''), payload, when ('' = now, '+<ms>' = after
--   that delay, '@<ms>' = at that time, which if past means now); grouped by queue,
--   then g, and g groups: queue, first job (0-based), count.
-- Returns {'created', now_ms} | {'replay', 'id1,id2,…'} | {'mismatch'} | {'limited', retry_after_ms}
--   | {'too_many_queues', cap} | {'quota_exceeded', 'live' | 'bytes', in use, cap}
--   | {'quota_exceeded', 'email', sent today, cap, ms until the count starts again}
local tag, maxlen, idem_key = ARGV[1], ARGV[2], ARGV[3]

if idem_key ~= '' then
  local prev = redis.call('GET', idem_key)
  if prev then
    local sep = string.find(prev, '\t', 1, true)
    if string.sub(prev, 1, sep - 1) == ARGV[4] then
      return {'replay', string.sub(prev, sep + 1)}
    end
    return {'mismatch'}
  end
end

local tenant, n = ARGV[7], tonumber(ARGV[8])
local now = now_ms()
local at = 16 + 4 * n
local g = tonumber(ARGV[at])
at = at + 1

-- The tenant's queues (`t:<tenant>:queues`): a request that would take it past
-- its cap stores nothing.
local max_queues = tonumber(ARGV[11])
local tenant_queues = tag .. ':t:' .. tenant .. ':queues'
local new_queues = {}
for i = 0, g - 1 do
  local queue = ARGV[at + 3 * i]
  if redis.call('SISMEMBER', tenant_queues, queue) == 0 then new_queues[#new_queues + 1] = queue end
end
if max_queues > 0 and #new_queues > 0 and redis.call('SCARD', tenant_queues) + #new_queues > max_queues then
  return {'too_many_queues', max_queues}
end

-- Its usage (`t:<tenant>:usage`): live jobs and stored bytes, which every script
-- keeps exactly. A spec is its head, the time stamp and the payload.
local usage = tag .. ':t:' .. tenant .. ':usage'
local max_live, max_bytes = tonumber(ARGV[12]), tonumber(ARGV[13])
local bytes = 0
for i = 0, n - 1 do
  local b = 16 + 4 * i
  bytes = bytes + #ARGV[b + 1] + #ARGV[b + 2] + 15
end
if max_live > 0 or max_bytes > 0 then
  local used = redis.call('HMGET', usage, 'live', 'bytes')
  local live, stored = tonumber(used[1]) or 0, tonumber(used[2]) or 0
  if max_live > 0 and live + n > max_live then return {'quota_exceeded', 'live', live, max_live} end
  if max_bytes > 0 and stored + bytes > max_bytes then return {'quota_exceeded', 'bytes', stored, max_bytes} end
end

-- Its email recipients today (`t:<tenant>:email:<day>`, UTC days), when these
-- jobs address any.
local recipients, max_recipients = tonumber(ARGV[15]), tonumber(ARGV[14])
local day = math.floor(now / 86400000)
local mailed = tag .. ':t:' .. tenant .. ':email:' .. day
if recipients > 0 and max_recipients > 0 then
  local sent = tonumber(redis.call('GET', mailed)) or 0
  if sent + recipients > max_recipients then
    return {'quota_exceeded', 'email', sent, max_recipients, (day + 1) * 86400000 - now}
  end
end

-- The tenant's token bucket: a job each, or a token per 4 KiB stored if that
-- is more, so large jobs cannot bring in bytes at the rate of small ones
-- (capped at the burst, which any request must fit in).
local rate, burst = tonumber(ARGV[9]), tonumber(ARGV[10])
local cost = math.min(math.max(n, math.ceil(bytes / 4096)), math.max(burst, n))
local held = tokens(tag, tenant, rate, burst, now)
if held < cost then return {'limited', wait_for(cost, held, rate)} end
spend(tag, tenant, cost, held, rate, burst, now)

local w = writer(tag, now)
local stamp = w.now
-- Every job due now has the same state: built once per call.
local ready_state = 'queued\t0\t' .. stamp .. '\t0\t0\t0\tl\t1\nqueued\t0\t' .. stamp .. '\t'
local specs, states, index = {}, {}, {}
local metas = {}
-- Index scores are created_ms × 1000 + position, so that the jobs of one batch
-- (one millisecond) keep their order and page cleanly.
local base = now * 1000
for _ = 1, g do
  local queue, first, count = ARGV[at], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  at = at + 3
  local ready, scheduled, nready = {}, {}, 0
  for i = first, first + count - 1 do
    local b = 16 + 4 * i
    local id, head, when = ARGV[b], ARGV[b + 1], ARGV[b + 3]
    local meta = metas[head]
    if not meta then
      meta = spec_meta(head)
      metas[head] = meta
    end
    specs[2 * i + 1], specs[2 * i + 2] = id, head .. '\t' .. stamp .. '\t' .. ARGV[b + 2]
    index[2 * i + 1], index[2 * i + 2] = base + i, id
    local due = now
    if when ~= '' then
      local ms = tonumber(string.sub(when, 2))
      if string.sub(when, 1, 1) == '+' then due = now + ms elseif ms > now then due = ms end
    end
    if due > now then
      scheduled[#scheduled + 1] = due
      scheduled[#scheduled + 1] = id
      states[2 * i + 1], states[2 * i + 2] = id, 'scheduled\t0\t' .. due .. '\t0\t0\t0\t\t1\nscheduled\t0\t' .. stamp .. '\t'
      event(w, id, meta, 'scheduled', '0')
    else
      nready = nready + 1
      ready[nready] = id
      states[2 * i + 1], states[2 * i + 2] = id, ready_state
      event(w, id, meta, 'queued', '0')
    end
  end
  local counts = counts_key(tag, tenant)
  if nready > 0 then
    redis.call('HINCRBY', counts, queue .. '\tqueued', nready)
    local list = ready_key(tag, queue, tenant)
    -- The first chunk's RPUSH says whether the list was empty.
    local length = redis.call('RPUSH', list, unpack(ready, 1, math.min(nready, 512)))
    for i = 513, nready, 512 do redis.call('RPUSH', list, unpack(ready, i, math.min(i + 511, nready))) end
    if length == math.min(nready, 512) then enlist(tag, queue, tenant) end
  end
  if #scheduled > 0 then
    redis.call('HINCRBY', counts, queue .. '\tscheduled', #scheduled / 2)
    chunked('ZADD', tag .. ':q:' .. queue .. ':scheduled', scheduled, 2)
    local earliest = scheduled[1]
    for i = 3, #scheduled, 2 do earliest = math.min(earliest, scheduled[i]) end
    due_at(tag, queue, earliest)
  end
end
if #new_queues > 0 then
  chunked('SADD', tenant_queues, new_queues)
  chunked('SADD', tag .. ':queues', new_queues)
end
chunked('HSET', tag .. ':spec', specs, 2)
chunked('HSET', tag .. ':state', states, 2)
redis.call('HINCRBY', usage, 'live', n)
redis.call('HINCRBY', usage, 'bytes', bytes)
chunked('ZADD', tag .. ':t:' .. tenant .. ':jobs', index, 2)
redis.call('SADD', tag .. ':tenants', tenant)
if recipients > 0 then
  redis.call('INCRBY', mailed, recipients)
  redis.call('EXPIRE', mailed, 172800)
end

emit(tag, maxlen, table.concat(w.lines, '\n'))
wake(tag)
if idem_key ~= '' then
  redis.call('SET', idem_key, ARGV[4] .. '\t' .. ARGV[6], 'EX', ARGV[5])
end
return {'created', now}
