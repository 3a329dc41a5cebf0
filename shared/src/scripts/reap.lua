-- REAP: takes back jobs whose lease expired (their worker died or hung). The lost
-- run counts as an attempt: the job goes back to its ready list, or ends `failed`
-- when that was its last attempt, so a job that kills its worker cannot loop.
-- Then deletes records whose retention ended (the one-second buckets `gc:<second>`),
-- forgets silent workers, and prunes the listing indexes.
-- KEYS[1]  the events stream (routes the call)
-- ARGV[1]  tag   ARGV[2] limit (per queue, and for the sweep)   ARGV[3] events maxlen
-- ARGV[4]  failed ttl ms   ARGV[5] index horizon ms   ARGV[6] worker silence ms
-- Returns {jobs taken back, records deleted, 1 if the sweep stopped at its limit}.
local tag, limit, maxlen, failed_ttl = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local horizon, silence = tonumber(ARGV[5]), tonumber(ARGV[6])
local now = now_ms()
local w = writer(tag, now)
local reaped, requeued = 0, false
local err = 'lease expired: the worker running this attempt stopped responding'

for _, queue in ipairs(redis.call('SMEMBERS', tag .. ':queues')) do
  local q = tag .. ':q:' .. queue
  -- The running hash holds at most the jobs in flight: scanning it is cheap.
  local leases = redis.call('HGETALL', q .. ':running')
  local expired = {}
  for i = 1, #leases, 2 do
    if tonumber(leases[i + 1]) <= now and #expired < limit then expired[#expired + 1] = leases[i] end
  end
  if #expired > 0 then
    local states = hmget(tag .. ':state', expired)
    local specs = hmget(tag .. ':spec', expired)
    for i, id in ipairs(expired) do
      local status, attempts, due, cancel, _, history = parse_state(states[i])
      if status == 'running' and specs[i] then
        local meta = spec_meta(specs[i])
        local max_attempts = tonumber(string.match(specs[i], '^[^\t]*\t[^\t]*\t[^\t]*\t(%d+)'))
        if cancel == '1' then
          transition(w, id, meta, status, 'cancelled', attempts, due, cancel, now + failed_ttl, history, err)
        elseif tonumber(attempts) >= max_attempts then
          redis.call('ZADD', q .. ':failed', now, id)
          transition(w, id, meta, status, 'failed', attempts, due, cancel, now + failed_ttl, history, err)
        else
          transition(w, id, meta, status, 'queued', attempts, due, cancel, 0, history, err)
          push(w, q .. ':ready', id)
          requeued = true
        end
        reaped = reaped + 1
      end
    end
    chunked('HDEL', q .. ':running', expired)
  end
  redis.call('ZREMRANGEBYSCORE', q .. ':failed', '-inf', now - failed_ttl)
end
flush(w, maxlen)
if requeued then wake(tag) end

-- Retention: sweep whole seconds that have passed, oldest first (bounded per call).
local swept, budget, steps = 0, limit, 0
local cursor = tonumber(redis.call('GET', tag .. ':gc:cursor'))
if cursor then
  local last = math.floor(now / 1000) - 1
  while cursor <= last and budget > 0 and steps < 3600 do
    local bucket = tag .. ':gc:' .. cursor
    local ids = redis.call('LPOP', bucket, budget)
    if ids then
      budget = budget - #ids
      local states = hmget(tag .. ':state', ids)
      local gone, ended = {}, {}
      for i, id in ipairs(ids) do
        local status, _, _, _, expires = parse_state(states[i])
        -- A job retried after it ended is live again: keep it.
        if (status == 'succeeded' or status == 'failed' or status == 'cancelled') and tonumber(expires) <= now then
          gone[#gone + 1] = id
          ended[#ended + 1] = status
        end
      end
      if #gone > 0 then
        local specs = hmget(tag .. ':spec', gone)
        for i, spec in ipairs(specs) do
          if spec then count(w, spec_meta(spec), ended[i], -1) end
        end
        for _, column in ipairs({':spec', ':state', ':result'}) do
          chunked('HDEL', tag .. column, gone)
        end
      end
      swept = swept + #gone
    end
    if redis.call('EXISTS', bucket) == 1 then break end
    cursor = cursor + 1
    steps = steps + 1
  end
  redis.call('SET', tag .. ':gc:cursor', cursor)
  flush(w, maxlen)
end

for _, tenant in ipairs(redis.call('SMEMBERS', tag .. ':tenants')) do
  redis.call('ZREMRANGEBYSCORE', tag .. ':t:' .. tenant .. ':jobs', '-inf', (now - horizon) * 1000)
end
redis.call('ZREMRANGEBYSCORE', tag .. ':workers', '-inf', now - silence)
-- More to do when the sweep stopped at its record budget or its step bound.
local more = 0
if budget <= 0 or steps >= 3600 then more = 1 end
return {reaped, swept, more}
