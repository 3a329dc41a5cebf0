-- CANCEL: queued, scheduled and retrying jobs become `cancelled`; a running job is
-- flagged (its handler sees the flag at the next heartbeat, and it will not be retried).
-- KEYS[1]  the job record
-- ARGV[1]  tag   ARGV[2] job id   ARGV[3] tenant   ARGV[4] events maxlen   ARGV[5] failed ttl s
-- Returns {'cancelled'} | {'flagged'} | {'conflict', status} | {'not_found'}
local tag, id, tenant, maxlen, failed_ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local key = KEYS[1]
local f = redis.call('HMGET', key, 'status', 'tenant', 'queue', 'type', 'attempts', 'hist_n')
if not f[1] or f[2] ~= tenant then return {'not_found'} end
local status, queue = f[1], f[3]
local q = tag .. ':q:' .. queue
if status == 'running' then
  redis.call('HSET', key, 'cancel_requested', 1)
  return {'flagged'}
elseif status == 'queued' then
  redis.call('LREM', q .. ':ready', 1, id)
elseif status == 'scheduled' then
  redis.call('ZREM', q .. ':scheduled', id)
elseif status == 'retrying' then
  redis.call('ZREM', q .. ':retry', id)
else
  return {'conflict', status}
end
local now = now_ms()
local h = tonumber(f[6]) + 1
redis.call('HSET', key, 'status', 'cancelled', 'finished_at', now,
  'hist_n', h, 'h:' .. h, history_line('cancelled', f[5], now))
redis.call('EXPIRE', key, failed_ttl)
emit(tag, maxlen, {event_line(id, tenant, f[4], queue, 'cancelled', f[5], now)})
return {'cancelled'}
