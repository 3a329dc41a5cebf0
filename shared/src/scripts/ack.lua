-- ACK: records the outcomes of a batch of attempts. An outcome whose attempt no
-- longer holds the job (its lease was reaped and the job re-claimed, or it was
-- released) is ignored: the attempt number is the fencing token.
-- KEYS[1]  the events stream (routes the call)
-- ARGV[1]  tag   ARGV[2] events maxlen   ARGV[3] succeeded ttl ms   ARGV[4] failed ttl ms
-- ARGV[5]  number of queues g, then g groups: queue, count k, and k outcomes of 5
--          fields: id meta (tenant \t type \t queue) attempt verdict text
--   verdict: ok (text = result JSON) | fail (no retry: permanent, or the last
--            attempt; text = error) | <ms> (retry after that many ms; text = error)
-- A job whose cancellation was requested while it ran ends `cancelled` instead
-- of retrying or failing.
-- Returns the number of stale outcomes ignored.
local tag, maxlen, ok_ttl, failed_ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
local w = writer(tag, now)
local ok_expires, failed_expires = tostring(now + ok_ttl), tostring(now + failed_ttl)
local stale, retried = 0, false

local at = 6
for _ = 1, tonumber(ARGV[5]) do
  local queue, k = ARGV[at], tonumber(ARGV[at + 1])
  local first = at + 2
  at = first + 5 * k
  local ids = {}
  for j = 0, k - 1 do ids[j + 1] = ARGV[first + 5 * j] end
  local states = hmget(tag .. ':state', ids)
  local leaving, nleaving = {}, 0
  for j = 0, k - 1 do
    local b = first + 5 * j
    local id, meta, attempt, verdict, text = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
    local status, attempts, due, cancel, _, history = parse_state(states[j + 1])
    if status ~= 'running' or attempts ~= attempt then
      stale = stale + 1
    else
      nleaving = nleaving + 1
      leaving[nleaving] = id
      if verdict == 'ok' then
        if text ~= 'null' then
          w.result[#w.result + 1] = id
          w.result[#w.result + 1] = text
        end
        transition(w, id, meta, status, 'succeeded', attempt, due, cancel, ok_expires, history)
      elseif cancel == '1' then
        transition(w, id, meta, status, 'cancelled', attempt, due, cancel, failed_expires, history, text)
      elseif verdict == 'fail' then
        redis.call('ZADD', tag .. ':q:' .. queue .. ':failed', now, id)
        transition(w, id, meta, status, 'failed', attempt, due, cancel, failed_expires, history, text)
      else
        local retry_at = now + tonumber(verdict)
        redis.call('ZADD', tag .. ':q:' .. queue .. ':retry', retry_at, id)
        transition(w, id, meta, status, 'retrying', attempt, retry_at, cancel, 0, history, text)
        retried = true
      end
    end
  end
  if nleaving > 0 then chunked('HDEL', tag .. ':q:' .. queue .. ':running', leaving) end
end

flush(w, maxlen)
if retried then wake(tag) end
return stale
