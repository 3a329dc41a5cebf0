-- HEARTBEAT: registers a live worker and renews the leases of its running jobs.
-- KEYS[1]  the workers zset (routes the call)
-- ARGV[1]  tag   ARGV[2] worker id   ARGV[3] lease ms   ARGV[4] worker description (JSON)
-- ARGV[5..] per running job, 3 fields: id queue attempt
-- Returns, per job in order: 0 = renewed, 1 = renewed and cancellation requested,
-- 2 = lease lost (the job was reaped or released; its outcome will be ignored).
local tag, worker, lease = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = now_ms()
redis.call('ZADD', tag .. ':workers', now, worker)
redis.call('SET', tag .. ':worker:' .. worker, ARGV[4], 'PX', lease * 3)
local out = {}
for b = 5, #ARGV, 3 do
  local id, queue, attempt = ARGV[b], ARGV[b + 1], tonumber(ARGV[b + 2])
  local f = redis.call('HMGET', tag .. ':job:' .. id, 'status', 'attempts', 'cancel_requested')
  if f[1] == 'running' and tonumber(f[2]) == attempt then
    redis.call('ZADD', tag .. ':q:' .. queue .. ':running', 'XX', now + lease, id)
    if f[3] == '1' then out[#out + 1] = 1 else out[#out + 1] = 0 end
  else
    out[#out + 1] = 2
  end
end
return out
