-- RELEASE: a stopping worker hands back runs it claimed but will not finish. The
-- attempt is not counted (the worker gave it up; it did not fail) and the job goes
-- to the front of its ready list, unless its cancellation was requested: then it
-- ends `cancelled`, as it would have had the run finished.
-- KEYS[1]  the events stream (routes the call)
-- ARGV[1]  tag   ARGV[2] events maxlen   ARGV[3] failed ttl ms
-- ARGV[4..] per run, 4 fields: id meta (tenant \t type \t queue) queue token
-- Returns the number of runs handed back.
local tag, maxlen, failed_ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = now_ms()
local w = writer(tag, now)
local ids = {}
for b = 4, #ARGV, 4 do ids[#ids + 1] = ARGV[b] end
if #ids == 0 then return 0 end
local states = hmget(tag .. ':state', ids)
local released, requeued = 0, false
local left = {}
for i, id in ipairs(ids) do
  local b = 4 + (i - 1) * 4
  local meta, queue, token = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local status, attempts, due, cancel, _, history, runs, flags, total = parse_state(states[i])
  if status == 'running' and runs == token then
    redis.call('HDEL', tag .. ':q:' .. queue .. ':running', id)
    left[queue] = true
    if cancel == '1' then
      transition(w, id, meta, status, 'cancelled', attempts, due, cancel, now + failed_ttl, runs, '', total,
        history, 'cancelled: handed back by a stopping worker')
    else
      transition(w, id, meta, status, 'queued', tonumber(attempts) - 1, due, cancel, 0, runs, 'l', total, history)
      push_front(tag, queue, tenant_of(meta), id)
      requeued = true
    end
    released = released + 1
  end
end
flush(w, maxlen)
for queue in pairs(left) do idle_check(tag, queue) end
if requeued then wake(tag) end
return released
