-- RETRY_FAILED: queues again, each with a fresh attempt budget, up to `limit`
-- failed jobs of one tenant on one queue, oldest failure first. Runs go on
-- counting (see retry.lua). It walks the tenant's own failed index of the
-- queue, so its cost is the jobs it retries, whoever else failed there.
-- KEYS[1]  the tenant's failed zset on the queue (`q:<queue>:t:<tenant>:failed`)
-- Each job retried takes a token from the tenant's submission bucket, as a new
-- job does: a call retries as many as the bucket holds, at most `limit`.
-- ARGV[1]  tag   ARGV[2] queue   ARGV[3] tenant   ARGV[4] limit   ARGV[5] events maxlen
-- ARGV[6]  rate limit, per second (0 = none)   ARGV[7] burst
-- Returns {retried, more}: more = 1 when failed jobs remain (call again); or
-- {'limited', ms} when the bucket holds not even one.
local tag, queue, tenant, limit, maxlen = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local rate, burst = tonumber(ARGV[6]), tonumber(ARGV[7])
local now = now_ms()
local held = tokens(tag, tenant, rate, burst, now)
if held < 1 and redis.call('ZCARD', KEYS[1]) > 0 then return {'limited', wait_for(1, held, rate)} end
limit = math.min(limit, math.floor(held))
local w = writer(tag, now)
local ids = redis.call('ZRANGE', KEYS[1], 0, limit - 1)
local retried = 0
if #ids > 0 then
  local states = hmget(tag .. ':state', ids)
  local specs = hmget(tag .. ':spec', ids)
  for i, id in ipairs(ids) do
    local status, _, _, _, _, history, runs, flags, total = parse_state(states[i])
    if status == 'failed' and specs[i] then
      local meta = spec_meta(specs[i])
      if not has(flags, 'l') then push_ready(w, queue, meta, id) end
      transition(w, id, meta, status, 'queued', 0, w.now, 0, 0, runs, 'l', total, history)
      retried = retried + 1
    end
  end
  chunked('ZREM', KEYS[1], ids)
end
spend(tag, tenant, retried, held, rate, burst, now)
flush(w, maxlen)
if retried > 0 then wake(tag) end
local more = 0
if redis.call('ZCARD', KEYS[1]) > 0 then more = 1 end
return {retried, more}
