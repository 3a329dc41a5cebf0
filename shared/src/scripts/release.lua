-- RELEASE: a stopping worker hands back jobs it claimed but will not finish. The
-- attempt is not counted (the worker gave it up; it did not fail) and the job goes
-- to the front of its ready list.
-- KEYS[1]  the events stream (routes the call)
-- ARGV[1]  tag   ARGV[2] events maxlen
-- ARGV[3..] per job, 4 fields: id meta (tenant \t type \t queue) queue attempt
-- Returns the number of jobs handed back.
local tag, maxlen = ARGV[1], ARGV[2]
local w = writer(tag, now_ms())
local ids = {}
for b = 3, #ARGV, 4 do ids[#ids + 1] = ARGV[b] end
if #ids == 0 then return 0 end
local states = hmget(tag .. ':state', ids)
local released = 0
for i, id in ipairs(ids) do
  local b = 3 + (i - 1) * 4
  local meta, queue, attempt = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local status, attempts, due, cancel, _, history = parse_state(states[i])
  if status == 'running' and attempts == attempt then
    transition(w, id, meta, status, 'queued', tonumber(attempt) - 1, due, cancel, 0, history)
    redis.call('HDEL', tag .. ':q:' .. queue .. ':running', id)
    redis.call('LPUSH', tag .. ':q:' .. queue .. ':ready', id)
    released = released + 1
  end
end
flush(w, maxlen)
if released > 0 then wake(tag) end
return released
