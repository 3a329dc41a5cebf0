-- ENQUEUE: creates one or more jobs atomically, honouring an optional Idempotency-Key.
-- The caller builds every record string, and sends each job's strings once: the
-- script files them into the columns, the tenant's index and the queues, reusing
-- the argument strings, so its cost hardly grows with the work per job.
-- KEYS[1]  the events stream (routes the call; every key shares its hash tag)
-- ARGV[1]  tag `{prefix}`   ARGV[2] events maxlen
-- ARGV[3]  idempotency key name ('' = none)   ARGV[4] request fingerprint
-- ARGV[5]  idempotency ttl, seconds   ARGV[6] the ids, comma-separated (kept with the key)
-- ARGV[7]  the event lines, newline-separated   ARGV[8] tenant   ARGV[9] created_ms
-- ARGV[10] job count n   ARGV[11] rate limit, jobs/s (0 = none)   ARGV[12] burst
-- ARGV[13..] n × (id, spec, state with its first history line), grouped by queue
--   then g, and g ranges: queue, 'r' (ready) or 's' (scheduled), first job (0-based),
--   count, and for 's' one due_ms per job.
-- Returns {'created'} | {'replay', 'id1,id2,…'} | {'mismatch'} | {'limited', retry_after_ms}
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

local tenant, created, n = ARGV[8], tonumber(ARGV[9]), tonumber(ARGV[10])

-- The tenant's token bucket (keys.rs `rate_limit`), on the server's clock so
-- that every API instance shares one limit.
local rate, burst = tonumber(ARGV[11]), tonumber(ARGV[12])
if rate > 0 then
  local bucket = tag .. ':rl:' .. tenant
  local now = now_ms()
  local kept = redis.call('HMGET', bucket, 't', 'ts')
  local tokens = math.min(burst, (tonumber(kept[1]) or burst) + (now - (tonumber(kept[2]) or now)) * rate / 1000)
  if tokens < n then
    return {'limited', math.ceil((n - tokens) * 1000 / rate)}
  end
  redis.call('HSET', bucket, 't', tokens - n, 'ts', now)
  redis.call('PEXPIRE', bucket, math.ceil((burst - tokens + n) * 1000 / rate) + 1000)
end
local specs, states, index = {}, {}, {}
-- Index scores are created_ms × 1000 + position, so that the jobs of one batch
-- (one millisecond) keep their order and page cleanly.
local base = created * 1000
for i = 0, n - 1 do
  local at = 13 + 3 * i
  local id = ARGV[at]
  specs[2 * i + 1], specs[2 * i + 2] = id, ARGV[at + 1]
  states[2 * i + 1], states[2 * i + 2] = id, ARGV[at + 2]
  index[2 * i + 1], index[2 * i + 2] = base + i, id
end
chunked('HSET', tag .. ':spec', specs, 2)
chunked('HSET', tag .. ':state', states, 2)
chunked('ZADD', tag .. ':t:' .. tenant .. ':jobs', index, 2)
redis.call('SADD', tag .. ':tenants', tenant)

local at = 13 + 3 * n
local g = tonumber(ARGV[at])
at = at + 1
for _ = 1, g do
  local queue, kind, first, count = ARGV[at], ARGV[at + 1], tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3])
  at = at + 4
  local items = {}
  redis.call('HINCRBY', counts_key(tag, tenant), queue .. '\t' .. (kind == 'r' and 'queued' or 'scheduled'), count)
  if kind == 'r' then
    for j = 0, count - 1 do items[j + 1] = ARGV[13 + 3 * (first + j)] end
    chunked('RPUSH', tag .. ':q:' .. queue .. ':ready', items)
  else
    for j = 0, count - 1 do
      items[2 * j + 1], items[2 * j + 2] = ARGV[at + j], ARGV[13 + 3 * (first + j)]
    end
    chunked('ZADD', tag .. ':q:' .. queue .. ':scheduled', items, 2)
    at = at + count
  end
  redis.call('SADD', tag .. ':queues', queue)
end

emit(tag, maxlen, ARGV[7])
wake(tag)
if idem_key ~= '' then
  redis.call('SET', idem_key, ARGV[4] .. '\t' .. ARGV[6], 'EX', ARGV[5])
end
return {'created'}
