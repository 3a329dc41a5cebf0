-- 0005_fair_queues: from this schema on, ready jobs wait per queue and tenant
-- (`q:<queue>:t:<tenant>:ready`) so that tenants take turns, with the tenants
-- that have ready jobs on a queue in `q:<queue>:ring` and the queues with ready
-- jobs in `ready`; `due` scores the queues with scheduled or retrying jobs by
-- the earliest due time, and `busy` holds the queues with leases, so that no
-- script walks every queue ever named. Failed jobs are indexed per queue and
-- tenant (`q:<queue>:t:<tenant>:failed`), and a tenant's queues are in
-- `t:<tenant>:queues` (its cap). A tenant's usage (`t:<tenant>:usage`): its
-- live jobs and the bytes of its stored specs, for its quotas. This pass moves each queue's ready list and failed set
-- into the new keys, in order, and builds the indexes: one pass over the queued
-- and failed jobs and over the specs, during which Redis serves nothing else.
-- ARGV[1] tag `{prefix}`.
local tag = ARGV[1]
local function tenant_of(spec) return string.match(spec, '^[^\t]*') end

for _, queue in ipairs(redis.call('SMEMBERS', tag .. ':queues')) do
  local q = tag .. ':q:' .. queue
  -- Ready: each tenant's ids in their order, and the tenants in the order of their first job.
  local old, ring = q .. ':ready', {}
  local seen = {}
  local n = redis.call('LLEN', old)
  for first = 0, n - 1, 1000 do
    local ids = redis.call('LRANGE', old, first, first + 999)
    local specs = redis.call('HMGET', tag .. ':spec', unpack(ids))
    local by = {}
    for i, id in ipairs(ids) do
      if specs[i] then
        local tenant = tenant_of(specs[i])
        if not by[tenant] then by[tenant] = {} end
        table.insert(by[tenant], id)
        if not seen[tenant] then
          seen[tenant] = true
          ring[#ring + 1] = tenant
        end
      end
    end
    for tenant, list in pairs(by) do
      redis.call('RPUSH', q .. ':t:' .. tenant .. ':ready', unpack(list))
    end
  end
  redis.call('DEL', old)
  if #ring > 0 then
    redis.call('RPUSH', q .. ':ring', unpack(ring))
    redis.call('RPUSH', tag .. ':ready', queue)
  end
  -- Failed: per tenant, with the same scores.
  local failed = q .. ':failed'
  local m = redis.call('ZCARD', failed)
  for first = 0, m - 1, 1000 do
    local page = redis.call('ZRANGE', failed, first, first + 999, 'WITHSCORES')
    local ids = {}
    for i = 1, #page, 2 do ids[#ids + 1] = page[i] end
    local specs = redis.call('HMGET', tag .. ':spec', unpack(ids))
    for i = 1, #ids do
      if specs[i] then redis.call('ZADD', q .. ':t:' .. tenant_of(specs[i]) .. ':failed', page[2 * i], ids[i]) end
    end
  end
  redis.call('DEL', failed)
  -- Due and busy.
  local earliest
  for _, z in ipairs({':scheduled', ':retry'}) do
    local head = redis.call('ZRANGE', q .. z, 0, 0, 'WITHSCORES')
    if #head > 0 and (not earliest or tonumber(head[2]) < earliest) then earliest = tonumber(head[2]) end
  end
  if earliest then redis.call('ZADD', tag .. ':due', earliest, queue) end
  if redis.call('HLEN', q .. ':running') > 1 then redis.call('SADD', tag .. ':busy', queue) end
end

-- Each tenant's queues (those it has jobs in) and its live jobs.
local live_statuses = { queued = true, scheduled = true, running = true, retrying = true }
for _, tenant in ipairs(redis.call('SMEMBERS', tag .. ':tenants')) do
  local counts = redis.call('HGETALL', tag .. ':t:' .. tenant .. ':counts')
  local live = 0
  for i = 1, #counts, 2 do
    local n = tonumber(counts[i + 1]) or 0
    if n > 0 then
      local queue, status = string.match(counts[i], '^([^\t]*)\t(.*)$')
      redis.call('SADD', tag .. ':t:' .. tenant .. ':queues', queue)
      if live_statuses[status] then live = live + n end
    end
  end
  redis.call('HSET', tag .. ':t:' .. tenant .. ':usage', 'live', live, 'bytes', 0)
end
-- And the bytes of its specs.
local bytes = {}
local cursor = '0'
repeat
  local page = redis.call('HSCAN', tag .. ':spec', cursor, 'COUNT', 1000)
  cursor = page[1]
  for i = 2, #page[2], 2 do
    local tenant = tenant_of(page[2][i])
    bytes[tenant] = (bytes[tenant] or 0) + #page[2][i]
  end
until cursor == '0'
for tenant, n in pairs(bytes) do redis.call('HSET', tag .. ':t:' .. tenant .. ':usage', 'bytes', n) end
