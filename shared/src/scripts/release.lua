-- RELEASE: a stopping worker hands back jobs it claimed but will not finish. The
-- attempt is not counted (the worker gave it up; it did not fail) and the job goes
-- to the front of its ready list.
-- KEYS[1]  the events stream (routes the call)
-- ARGV[1]  tag   ARGV[2] events maxlen
-- ARGV[3..] per job, 3 fields: id queue attempt
-- Returns the number of jobs handed back.
local tag, maxlen = ARGV[1], ARGV[2]
local now = now_ms()
local lines, released = {}, 0
for b = 3, #ARGV, 3 do
  local id, queue, attempt = ARGV[b], ARGV[b + 1], tonumber(ARGV[b + 2])
  local key = tag .. ':job:' .. id
  local f = redis.call('HMGET', key, 'status', 'attempts', 'tenant', 'type', 'hist_n')
  if f[1] == 'running' and tonumber(f[2]) == attempt then
    local h = tonumber(f[5]) + 1
    redis.call('HSET', key, 'status', 'queued', 'attempts', attempt - 1,
      'hist_n', h, 'h:' .. h, history_line('queued', attempt - 1, now, 'released by a stopping worker'))
    redis.call('ZREM', tag .. ':q:' .. queue .. ':running', id)
    redis.call('LPUSH', tag .. ':q:' .. queue .. ':ready', id)
    lines[#lines + 1] = event_line(id, f[3], f[4], queue, 'queued', attempt - 1, now)
    released = released + 1
  end
end
emit(tag, maxlen, lines)
if released > 0 then wake(tag) end
return released
