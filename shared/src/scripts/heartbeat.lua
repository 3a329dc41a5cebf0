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
local ids = {}
for b = 5, #ARGV, 3 do ids[#ids + 1] = ARGV[b] end
if #ids == 0 then return {} end
local states = hmget(tag .. ':state', ids)
local renew, renew_order, out = {}, {}, {}
local expiry = tostring(now + lease)
for i, id in ipairs(ids) do
  local b = 5 + (i - 1) * 3
  local queue, attempt = ARGV[b + 1], ARGV[b + 2]
  local status, attempts, _, cancel = parse_state(states[i])
  if status == 'running' and attempts == attempt then
    local r = renew[queue]
    if not r then
      r = {}
      renew[queue] = r
      renew_order[#renew_order + 1] = queue
    end
    r[#r + 1] = id
    r[#r + 1] = expiry
    out[#out + 1] = (cancel == '1') and 1 or 0
  else
    out[#out + 1] = 2
  end
end
for _, queue in ipairs(renew_order) do
  chunked('HSET', tag .. ':q:' .. queue .. ':running', renew[queue], 2)
end
return out
