-- ACK: records the outcomes of a batch of attempts. An outcome whose attempt no
-- longer holds the job (its lease was reaped and the job re-claimed, or it was
-- released) is ignored: the attempt number is the fencing token.
-- KEYS[1]  the events stream (routes the call)
-- ARGV[1]  tag   ARGV[2] events maxlen   ARGV[3] succeeded ttl ms   ARGV[4] failed ttl ms
-- ARGV[5]  count n
-- ARGV[6..] per outcome, 7 fields: id meta (tenant \t type \t queue) queue attempt
--           kind retry_delay_ms text
--   kind: ok (text = result JSON) | retry (attempts remain; text = error)
--         | fail (no retry: permanent, or the last attempt; text = error)
-- A job whose cancellation was requested while it ran ends `cancelled` instead
-- of retrying or failing.
-- Returns the number of stale outcomes ignored.
local tag, maxlen, ok_ttl, failed_ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local n = tonumber(ARGV[5])
local now = now_ms()
local w = writer(tag, now)
local ok_expires, failed_expires = tostring(now + ok_ttl), tostring(now + failed_ttl)
local stale, retried = 0, false
local done, done_order = {}, {}   -- queue -> ids leaving the running hash

local ids = {}
for i = 0, n - 1 do ids[#ids + 1] = ARGV[6 + i * 7] end
local states = hmget(tag .. ':state', ids)

for i = 0, n - 1 do
  local b = 6 + i * 7
  local id, meta, queue, attempt, kind, text =
    ARGV[b], ARGV[b + 1], ARGV[b + 2], tonumber(ARGV[b + 3]), ARGV[b + 4], ARGV[b + 6]
  local status, attempts, due, cancel, _, history = parse_state(states[i + 1])
  if status ~= 'running' or attempts ~= attempt then
    stale = stale + 1
  else
    local leaving = done[queue]
    if not leaving then
      leaving = {}
      done[queue] = leaving
      done_order[#done_order + 1] = queue
    end
    leaving[#leaving + 1] = id
    if kind == 'ok' then
      if text ~= 'null' then
        w.result[#w.result + 1] = id
        w.result[#w.result + 1] = text
      end
      transition(w, id, meta, 'succeeded', attempt, due, cancel, ok_expires, history)
    elseif cancel == '1' then
      transition(w, id, meta, 'cancelled', attempt, due, cancel, failed_expires, history, text)
    elseif kind == 'retry' then
      local at = now + tonumber(ARGV[b + 5])
      redis.call('ZADD', tag .. ':q:' .. queue .. ':retry', at, id)
      transition(w, id, meta, 'retrying', attempt, at, cancel, 0, history, text)
      retried = true
    else
      redis.call('ZADD', tag .. ':q:' .. queue .. ':failed', now, id)
      transition(w, id, meta, 'failed', attempt, due, cancel, failed_expires, history, text)
    end
  end
end

flush(w, maxlen)
for _, queue in ipairs(done_order) do
  chunked('HDEL', tag .. ':q:' .. queue .. ':running', done[queue])
end
if retried then wake(tag) end
return stale
