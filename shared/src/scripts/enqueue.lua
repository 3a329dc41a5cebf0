-- ENQUEUE: creates one or more jobs atomically, honouring an optional Idempotency-Key.
-- The caller builds every record string, so the script mostly hands ranges of
-- ARGV to HSET/RPUSH/ZADD: its cost hardly grows with the work per job.
-- KEYS[1]  the events stream (routes the call; every key shares its hash tag)
-- ARGV[1]  tag `{prefix}`   ARGV[2] events maxlen
-- ARGV[3]  idempotency key name ('' = none)   ARGV[4] request fingerprint
-- ARGV[5]  idempotency ttl, seconds   ARGV[6] the ids, comma-separated (kept with the key)
-- ARGV[7]  the event lines, newline-separated   ARGV[8] job count n
-- ARGV[9..] sections, in order:
--   n × (id, spec)          n × (id, state with its first history line)
--   index groups:     g, then g × (tenant, k, k × (created_ms, id))
--   ready groups:     g, then g × (queue, k, k × id)
--   scheduled groups: g, then g × (queue, k, k × (due_ms, id))
-- Returns {'created'} | {'replay', 'id1,id2,…'} | {'mismatch'}
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

-- Calls `cmd key ARGV[from .. from+count-1]`, in chunks of whole `step`-tuples.
local function range(cmd, key, from, count, step)
  local last = from + count - 1
  local chunk = 512 * step
  for i = from, last, chunk do
    redis.call(cmd, key, unpack(ARGV, i, math.min(i + chunk - 1, last)))
  end
end

local n = tonumber(ARGV[8])
local at = 9
for _, column in ipairs({':spec', ':state'}) do
  range('HSET', tag .. column, at, 2 * n, 2)
  at = at + 2 * n
end

-- Groups: name, count, then count items of `width` arguments each.
local function groups(width, each)
  local g = tonumber(ARGV[at])
  at = at + 1
  for _ = 1, g do
    local name, k = ARGV[at], tonumber(ARGV[at + 1])
    each(name, at + 2, k * width)
    at = at + 2 + k * width
  end
end

groups(2, function(tenant, from, count)
  range('ZADD', tag .. ':t:' .. tenant .. ':jobs', from, count, 2)
  redis.call('SADD', tag .. ':tenants', tenant)
end)
groups(1, function(queue, from, count)
  range('RPUSH', tag .. ':q:' .. queue .. ':ready', from, count, 1)
  redis.call('SADD', tag .. ':queues', queue)
end)
groups(2, function(queue, from, count)
  range('ZADD', tag .. ':q:' .. queue .. ':scheduled', from, count, 2)
  redis.call('SADD', tag .. ':queues', queue)
end)

if ARGV[7] ~= '' then
  redis.call('XADD', tag .. ':events', 'MAXLEN', '~', maxlen, '*', 'e', ARGV[7])
end
wake(tag)
if idem_key ~= '' then
  redis.call('SET', idem_key, ARGV[4] .. '\t' .. ARGV[6], 'EX', ARGV[5])
end
return {'created'}
