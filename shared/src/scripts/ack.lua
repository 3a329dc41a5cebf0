-- ACK: records the outcomes of a batch of runs. An outcome counts only when its
-- run is the job's latest (`runs` = its token) and still open (flag `o`): the
-- job is running it, or the reaper took it back and nobody has claimed it
-- since, in which case the outcome a worker comes back with after a pause or
-- a partition is the truth and replaces the reaper's verdict. Anything else is
-- stale and ignored.
-- KEYS[1]  the events stream (routes the call)
-- ARGV[1]  tag   ARGV[2] events maxlen   ARGV[3] succeeded ttl ms   ARGV[4] failed ttl ms
-- ARGV[5]  number of queues g, then g groups: queue, count k, and k outcomes of 5
--          fields: id meta (tenant \t type \t queue) token verdict text
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
  local q = tag .. ':q:' .. queue
  for j = 0, k - 1 do
    local b = first + 5 * j
    local id, meta, token, verdict, text = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
    local status, attempt, due, cancel, _, history, runs, flags, total = parse_state(states[j + 1])
    if runs ~= token or not (status == 'running' or has(flags, 'o')) then
      stale = stale + 1
    else
      local failed = q .. ':t:' .. tenant_of(meta) .. ':failed'
      if status == 'running' then
        nleaving = nleaving + 1
        leaving[nleaving] = id
      elseif status == 'failed' then
        redis.call('ZREM', failed, id)
      end
      -- A running job's flags are `o` alone (its claim took it off the list).
      if status == 'running' then flags = '' else flags = closed(flags) end
      if verdict == 'ok' then
        if text ~= 'null' then
          w.result[#w.result + 1] = id
          w.result[#w.result + 1] = text
        end
        transition(w, id, meta, status, 'succeeded', attempt, due, cancel, ok_expires, runs, flags, total, history)
      elseif cancel == '1' then
        transition(w, id, meta, status, 'cancelled', attempt, due, cancel, failed_expires, runs, flags, total,
          history, text)
      elseif verdict == 'fail' then
        redis.call('ZADD', failed, now, id)
        transition(w, id, meta, status, 'failed', attempt, due, cancel, failed_expires, runs, flags, total,
          history, text)
      else
        local retry_at = now + tonumber(verdict)
        redis.call('ZADD', q .. ':retry', retry_at, id)
        due_at(tag, queue, retry_at)
        transition(w, id, meta, status, 'retrying', attempt, retry_at, cancel, 0, runs, flags, total, history,
          text)
        retried = true
      end
    end
  end
  if nleaving > 0 then chunked('HDEL', q .. ':running', leaving) end
end

flush(w, maxlen)
if retried then wake(tag) end
return stale
