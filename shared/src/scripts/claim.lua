-- CLAIM: leases up to `limit` ready jobs to one worker, first moving due scheduled
-- and retrying jobs onto their ready lists (at most 1,000 per list per call).
-- KEYS[1]  the wake stream (routes the call)
-- ARGV[1]  tag   ARGV[2] lease ms   ARGV[3] limit   ARGV[4] events maxlen
-- ARGV[5]  turn: a counter the worker advances each claim
-- ARGV[6..] queue names, in priority order (none = every known queue, taken in
--          turn from a rotating start so that no queue starves another)
-- Returns {n, wake_id, ms_until_next_due, <3 fields per job: id attempt spec>…}.
-- A claim short of its limit found every queue drained: it also says where to
-- wait from (the wake stream's last id, and when the next scheduled or retrying
-- job is due, -1 = none), so that the worker's next step is that wait rather
-- than a claim that would find nothing. A full claim returns wake_id ''.
local tag, lease, limit, maxlen = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local queues = {}
for i = 6, #ARGV do queues[#queues + 1] = ARGV[i] end
if #queues == 0 then
  local known = redis.call('SMEMBERS', tag .. ':queues')
  table.sort(known)
  local start = tonumber(ARGV[5]) % math.max(#known, 1)
  for i = 1, #known do queues[i] = known[(start + i - 1) % #known + 1] end
end

local now = now_ms()
local w = writer(tag, now)
local out = {0, '', -1}
local claimed, nout = 0, 3

-- Moves due jobs of one zset to the ready list (status queued).
local function promote(queue, zkey)
  local due = redis.call('ZRANGEBYSCORE', zkey, '-inf', now, 'LIMIT', 0, 1000)
  if #due == 0 then return false end
  local states = hmget(tag .. ':state', due)
  local specs = hmget(tag .. ':spec', due)
  for i, id in ipairs(due) do
    local status, attempts, due_at, cancel, _, history = parse_state(states[i])
    if (status == 'scheduled' or status == 'retrying') and specs[i] then
      transition(w, id, spec_meta(specs[i]), status, 'queued', attempts, due_at, cancel, 0, history)
      push(w, tag .. ':q:' .. queue .. ':ready', id)
    end
  end
  chunked('ZREM', zkey, due)
  return true
end

for _, queue in ipairs(queues) do
  if claimed >= limit then break end
  local q = tag .. ':q:' .. queue
  local promoted = promote(queue, q .. ':scheduled')
  promoted = promote(queue, q .. ':retry') or promoted
  if promoted then flush(w, maxlen) end
  local ids = redis.call('LPOP', q .. ':ready', limit - claimed)
  if ids then
    local states = hmget(tag .. ':state', ids)
    local specs = hmget(tag .. ':spec', ids)
    local leases, nleases = {RUNNING_PIN, RUNNING_PIN_VALUE}, 2
    local expiry = tostring(now + lease)
    for i, id in ipairs(ids) do
      local status, attempts, due, cancel, _, history = parse_state(states[i])
      -- A cancelled job may still sit in the list, and an expired one is gone: skip both.
      if status == 'queued' and specs[i] then
        local attempt = next_attempt(attempts)
        transition(w, id, spec_meta(specs[i]), status, 'running', attempt, due, cancel, 0, history)
        leases[nleases + 1] = id
        leases[nleases + 2] = expiry
        nleases = nleases + 2
        out[nout + 1] = id
        out[nout + 2] = attempt
        out[nout + 3] = specs[i]
        nout = nout + 3
        claimed = claimed + 1
      end
    end
    if nleases > 2 then chunked('HSET', q .. ':running', leases, 2) end
  end
end

flush(w, maxlen)
out[1] = claimed
if claimed == limit then return out end

local last = redis.call('XREVRANGE', tag .. ':wake', '+', '-', 'COUNT', 1)
out[2] = '0-0'
if #last > 0 then out[2] = last[1][1] end
for _, queue in ipairs(queues) do
  for _, z in ipairs({':scheduled', ':retry'}) do
    local first = redis.call('ZRANGE', tag .. ':q:' .. queue .. z, 0, 0, 'WITHSCORES')
    if #first > 0 then
      local wait = math.max(0, tonumber(first[2]) - now)
      if out[3] < 0 or wait < out[3] then out[3] = wait end
    end
  end
end
return out
