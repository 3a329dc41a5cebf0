-- ENQUEUE: creates one or more jobs atomically, honouring an optional Idempotency-Key.
-- KEYS[1]  the events stream (routes the call; every key shares its hash tag)
-- ARGV[1]  tag `{prefix}`          ARGV[2] events maxlen
-- ARGV[3]  idempotency key name ('' = none)   ARGV[4] request fingerprint
-- ARGV[5]  idempotency ttl, seconds            ARGV[6] job count n
-- ARGV[7..] per job, 10 fields: id tenant type queue payload max_attempts timeout_ms
--           run_at_ms (0 = now) backoff_base_ms backoff_cap_ms
-- Returns {'created', now_ms} | {'replay', 'id1,id2,…'} | {'mismatch'}
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

local now = now_ms()
local n = tonumber(ARGV[6])
local lines, ids = {}, {}
local ready, ready_order = {}, {}
local index, index_order = {}, {}

for i = 0, n - 1 do
  local b = 7 + i * 10
  local id, tenant, jtype, queue = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local run_at = tonumber(ARGV[b + 7])
  local status, due = 'queued', now
  if run_at > now then
    status, due = 'scheduled', run_at
  end
  redis.call('HSET', tag .. ':job:' .. id,
    'id', id, 'tenant', tenant, 'type', jtype, 'queue', queue, 'status', status,
    'attempts', 0, 'max_attempts', ARGV[b + 5], 'payload', ARGV[b + 4],
    'created_at', now, 'scheduled_at', due, 'timeout_ms', ARGV[b + 6],
    'backoff_base_ms', ARGV[b + 8], 'backoff_cap_ms', ARGV[b + 9],
    'hist_n', 1, 'h:1', history_line(status, 0, now))
  if status == 'queued' then
    if not ready[queue] then
      ready[queue] = {}
      ready_order[#ready_order + 1] = queue
    end
    table.insert(ready[queue], id)
  else
    redis.call('ZADD', tag .. ':q:' .. queue .. ':scheduled', due, id)
    if not ready[queue] then
      ready[queue] = {}
      ready_order[#ready_order + 1] = queue
    end
  end
  if not index[tenant] then
    index[tenant] = {}
    index_order[#index_order + 1] = tenant
  end
  table.insert(index[tenant], now)
  table.insert(index[tenant], id)
  lines[#lines + 1] = event_line(id, tenant, jtype, queue, status, 0, now)
  ids[#ids + 1] = id
end

for _, queue in ipairs(ready_order) do
  if #ready[queue] > 0 then
    chunked('RPUSH', tag .. ':q:' .. queue .. ':ready', ready[queue])
  end
  redis.call('SADD', tag .. ':queues', queue)
end
for _, tenant in ipairs(index_order) do
  chunked('ZADD', tag .. ':t:' .. tenant .. ':jobs', index[tenant], 2)
  redis.call('SADD', tag .. ':tenants', tenant)
end
emit(tag, maxlen, lines)
wake(tag)
if idem_key ~= '' then
  redis.call('SET', idem_key, ARGV[4] .. '\t' .. table.concat(ids, ','), 'EX', ARGV[5])
end
return {'created', now}
