-- HEARTBEAT: registers a live worker, renews the leases of the runs it holds, and
-- hands back the jobs of its claims whose reply it never got.
-- A claim whose reply is lost (a timeout, a dropped connection) may still have
-- run: its jobs are leased to this worker, which does not know them. The worker
-- knows which of its claims failed that way and names them here; their jobs
-- (leases `<expiry> \t <worker> \t <claim>`) go back to the front of their ready
-- lists without counting the attempt, as a run that provably never started.
-- This call comes after the lost claim on the same connection, so the claim has
-- run by now or never will.
-- KEYS[1]  the workers zset (routes the call)
-- ARGV[1]  tag   ARGV[2] worker id   ARGV[3] lease ms   ARGV[4] worker description (JSON)
-- ARGV[5]  events maxlen   ARGV[6] number of lost claims c, then c claim numbers
-- then per run, 4 fields: id queue token claim
-- Returns {jobs handed back, then per run in order: 0 = renewed, 1 = renewed and
-- cancellation requested, 2 = lease lost (the job was reaped, handed back, or
-- claimed again since; this run's outcome will be ignored unless it is still
-- open, see ack.lua)}.
local tag, worker, lease, maxlen = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[5]
local now = now_ms()
redis.call('ZADD', tag .. ':workers', now, worker)
redis.call('SET', tag .. ':worker:' .. worker, ARGV[4], 'PX', lease * 3)

local nlost = tonumber(ARGV[6])
local first = 7 + nlost
local out = {0}
if nlost > 0 then
  local lost = {}
  for i = 7, first - 1 do lost[ARGV[i]] = true end
  local w = writer(tag, now)
  for _, queue in ipairs(redis.call('SMEMBERS', tag .. ':busy')) do
    local running = tag .. ':q:' .. queue .. ':running'
    local leases = redis.call('HGETALL', running)
    local ids = {}
    for i = 1, #leases, 2 do
      local owner, claim = string.match(leases[i + 1], '^%d+\t(.-)\t(%d+)$')
      if owner == worker and lost[claim] then ids[#ids + 1] = leases[i] end
    end
    if #ids > 0 then
      local states = hmget(tag .. ':state', ids)
      local specs = hmget(tag .. ':spec', ids)
      for i, id in ipairs(ids) do
        local status, attempts, due, cancel, _, history, runs, flags, total = parse_state(states[i])
        if status == 'running' and specs[i] then
          local meta = spec_meta(specs[i])
          transition(w, id, meta, status, 'queued', tonumber(attempts) - 1, due, cancel, 0, runs,
            listed(closed(flags), true), total, history, 'claim reply lost on its way to the worker; the attempt does not count')
          push_front(tag, queue, tenant_of(meta), id)
          out[1] = out[1] + 1
        end
      end
      chunked('HDEL', running, ids)
      idle_check(tag, queue)
    end
  end
  flush(w, maxlen)
  if out[1] > 0 then wake(tag) end
end

local ids = {}
for b = first, #ARGV, 4 do ids[#ids + 1] = ARGV[b] end
if #ids == 0 then return out end
local states = hmget(tag .. ':state', ids)
local renew, renew_order = {}, {}
local expiry = tostring(now + lease) .. '\t' .. worker .. '\t'
for i, id in ipairs(ids) do
  local b = first + (i - 1) * 4
  local queue, token, claim = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local status, _, _, cancel, _, _, runs = parse_state(states[i])
  if status == 'running' and runs == token then
    local r = renew[queue]
    if not r then
      r = {}
      renew[queue] = r
      renew_order[#renew_order + 1] = queue
    end
    r[#r + 1] = id
    r[#r + 1] = expiry .. claim
    out[#out + 1] = (cancel == '1') and 1 or 0
  else
    out[#out + 1] = 2
  end
end
for _, queue in ipairs(renew_order) do
  chunked('HSET', tag .. ':q:' .. queue .. ':running', renew[queue], 2)
end
return out
