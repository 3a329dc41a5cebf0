-- CLAIM: leases up to `limit` ready jobs to one worker, first moving due scheduled
-- and retrying jobs onto their ready lists (bounded per call).
-- KEYS[1]  the wake stream (routes the call)
-- ARGV[1]  tag   ARGV[2] worker id   ARGV[3] lease ms   ARGV[4] limit
-- ARGV[5]  events maxlen   ARGV[6..] queue names (none = every known queue)
-- Returns {'J', n, <10 fields per job: id tenant type queue payload attempt
--          max_attempts timeout_ms backoff_base_ms backoff_cap_ms>…}
--      or {'E', last_wake_id, ms_until_next_due (-1 = nothing scheduled)}
local tag, worker, lease, limit, maxlen = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local queues = {}
for i = 6, #ARGV do queues[#queues + 1] = ARGV[i] end
if #queues == 0 then queues = redis.call('SMEMBERS', tag .. ':queues') end

local now = now_ms()
local lines, out = {}, {}
local claimed = 0

local function promote(queue, zkey)
  local due = redis.call('ZRANGEBYSCORE', zkey, '-inf', now, 'LIMIT', 0, 1000)
  if #due == 0 then return end
  local moved = {}
  for _, id in ipairs(due) do
    local key = tag .. ':job:' .. id
    local f = redis.call('HMGET', key, 'status', 'tenant', 'type', 'attempts', 'hist_n')
    if f[1] == 'scheduled' or f[1] == 'retrying' then
      local h = tonumber(f[5]) + 1
      redis.call('HSET', key, 'status', 'queued', 'hist_n', h, 'h:' .. h, history_line('queued', f[4], now))
      lines[#lines + 1] = event_line(id, f[2], f[3], queue, 'queued', f[4], now)
      moved[#moved + 1] = id
    end
  end
  chunked('ZREM', zkey, due)
  if #moved > 0 then chunked('RPUSH', tag .. ':q:' .. queue .. ':ready', moved) end
end

for _, queue in ipairs(queues) do
  if claimed >= limit then break end
  local q = tag .. ':q:' .. queue
  promote(queue, q .. ':scheduled')
  promote(queue, q .. ':retry')
  local ids = redis.call('LPOP', q .. ':ready', limit - claimed)
  if ids then
    local leases = {}
    for _, id in ipairs(ids) do
      local key = tag .. ':job:' .. id
      local f = redis.call('HMGET', key, 'status', 'tenant', 'type', 'payload', 'attempts',
        'max_attempts', 'timeout_ms', 'backoff_base_ms', 'backoff_cap_ms', 'hist_n')
      -- A cancelled or expired record may still sit in the list: skip it.
      if f[1] == 'queued' then
        local attempt = tonumber(f[5]) + 1
        local h = tonumber(f[10]) + 1
        redis.call('HSET', key, 'status', 'running', 'attempts', attempt, 'started_at', now,
          'worker', worker, 'hist_n', h, 'h:' .. h, history_line('running', attempt, now))
        leases[#leases + 1] = now + lease
        leases[#leases + 1] = id
        lines[#lines + 1] = event_line(id, f[2], f[3], queue, 'running', attempt, now)
        local o = #out
        out[o + 1], out[o + 2], out[o + 3], out[o + 4], out[o + 5] = id, f[2], f[3], queue, f[4]
        out[o + 6], out[o + 7], out[o + 8], out[o + 9], out[o + 10] = attempt, f[6], f[7], f[8], f[9]
        claimed = claimed + 1
      end
    end
    if #leases > 0 then chunked('ZADD', q .. ':running', leases, 2) end
  end
end

emit(tag, maxlen, lines)
if claimed > 0 then
  local reply = {'J', claimed}
  for i = 1, #out do reply[i + 2] = out[i] end
  return reply
end

local last = redis.call('XREVRANGE', tag .. ':wake', '+', '-', 'COUNT', 1)
local last_id = '0-0'
if #last > 0 then last_id = last[1][1] end
local next_due = -1
for _, queue in ipairs(queues) do
  for _, z in ipairs({':scheduled', ':retry'}) do
    local first = redis.call('ZRANGE', tag .. ':q:' .. queue .. z, 0, 0, 'WITHSCORES')
    if #first > 0 then
      local wait = math.max(0, tonumber(first[2]) - now)
      if next_due < 0 or wait < next_due then next_due = wait end
    end
  end
end
return {'E', last_id, next_due}
