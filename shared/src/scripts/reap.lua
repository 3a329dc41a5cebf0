-- REAP: takes back jobs whose lease expired (their worker died, hung, or lost
-- Redis). The lost run counts as an attempt: the job goes back to its ready list,
-- or ends `failed` when that was its last attempt, so a job that kills its
-- worker cannot loop. The run stays open (see ack.lua): its worker may still
-- come back with the outcome. (A claim whose reply its worker never got is handed
-- back uncounted by that worker's next heartbeat, see heartbeat.lua.)
-- It looks only at the queues with leases (`busy`). Then deletes records whose
-- retention ended (the one-second buckets `gc:<second>`) with their listing and
-- failed-index entries, lets a tenant's queue go once nothing of it is left
-- there (`t:<tenant>:queues`), and forgets silent workers.
-- KEYS[1]  the events stream (routes the call)
-- ARGV[1]  tag   ARGV[2] limit (per queue, and for the sweep)   ARGV[3] events maxlen
-- ARGV[4]  failed ttl ms   ARGV[5] lease ms
-- Returns {jobs taken back, records deleted, 1 if the sweep stopped at its limit}.
local tag, limit, maxlen = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local failed_ttl, lease = tonumber(ARGV[4]), tonumber(ARGV[5])
local now = now_ms()
local w = writer(tag, now)
local reaped, requeued = 0, false
local expired_err = 'lease expired: the worker running this attempt stopped responding'

-- Leases run on the server's clock while Redis answers. When no REAP ran for a
-- whole lease, nobody could renew anything either (Redis was unreachable or
-- asleep, or every worker was paused or down): every lease starts over instead
-- of expiring, so workers that are still alive renew theirs and record what they
-- finished meanwhile. A dead worker's jobs come back one lease later.
local last = tonumber(redis.call('GET', tag .. ':reap:last'))
redis.call('SET', tag .. ':reap:last', now)
local outage = last ~= nil and now - last > lease

-- Takes back the expired leases `expired` of `queue`.
local function take_back(queue, expired)
  local q = tag .. ':q:' .. queue
  local states = hmget(tag .. ':state', expired)
  local specs = hmget(tag .. ':spec', expired)
  for i, id in ipairs(expired) do
    local status, attempts, due, cancel, _, history, runs, flags, total = parse_state(states[i])
    if status == 'running' and specs[i] then
      local meta = spec_meta(specs[i])
      local max_attempts = tonumber(string.match(specs[i], '^[^\t]*\t[^\t]*\t[^\t]*\t(%d+)'))
      if cancel == '1' then
        transition(w, id, meta, status, 'cancelled', attempts, due, cancel, now + failed_ttl, runs, flags, total,
          history, expired_err)
      elseif tonumber(attempts) >= max_attempts then
        redis.call('ZADD', q .. ':t:' .. tenant_of(meta) .. ':failed', now, id)
        transition(w, id, meta, status, 'failed', attempts, due, cancel, now + failed_ttl, runs, flags, total,
          history, expired_err)
      else
        transition(w, id, meta, status, 'queued', attempts, due, cancel, 0, runs, listed(flags, true), total, history,
          expired_err)
        push_ready(w, queue, meta, id)
        requeued = true
      end
      reaped = reaped + 1
    end
  end
  chunked('HDEL', q .. ':running', expired)
  idle_check(tag, queue)
end

for _, queue in ipairs(redis.call('SMEMBERS', tag .. ':busy')) do
  local q = tag .. ':q:' .. queue
  -- The running hash holds at most the jobs in flight: scanning it is cheap.
  local leases = redis.call('HGETALL', q .. ':running')
  if outage then
    local restarted, expiry = {}, now + lease
    for i = 1, #leases, 2 do
      local at, owner = string.match(leases[i + 1], '^(%d+)(.*)$')
      if leases[i] ~= RUNNING_PIN and tonumber(at) < expiry then
        restarted[#restarted + 1] = leases[i]
        restarted[#restarted + 1] = expiry .. owner
      end
    end
    if #restarted > 0 then chunked('HSET', q .. ':running', restarted, 2) end
  else
    local expired = {}
    for i = 1, #leases, 2 do
      if tonumber(string.match(leases[i + 1], '^%d+')) <= now and #expired < limit then
        expired[#expired + 1] = leases[i]
      end
    end
    if #expired > 0 then take_back(queue, expired) end
  end
end
flush(w, maxlen)
if requeued then wake(tag) end

-- Retention: past seconds' buckets, oldest first (bounded per call).
local swept, more, emptied = sweep(w, now, limit)
flush(w, maxlen)
free_queues(tag, emptied)

redis.call('ZREMRANGEBYSCORE', tag .. ':workers', '-inf', now - lease * 3)
return {reaped, swept, more}
