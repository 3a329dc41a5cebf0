-- RETRY: a failed or cancelled job is queued again with a fresh attempt budget.
-- KEYS[1]  the job record
-- ARGV[1]  tag   ARGV[2] job id   ARGV[3] tenant   ARGV[4] events maxlen
-- Returns {'queued'} | {'conflict', status} | {'not_found'}
local tag, id, tenant, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local key = KEYS[1]
local f = redis.call('HMGET', key, 'status', 'tenant', 'queue', 'type', 'hist_n')
if not f[1] or f[2] ~= tenant then return {'not_found'} end
if f[1] ~= 'failed' and f[1] ~= 'cancelled' then return {'conflict', f[1]} end
local queue = f[3]
local q = tag .. ':q:' .. queue
local now = now_ms()
local h = tonumber(f[5]) + 1
redis.call('PERSIST', key)
redis.call('HDEL', key, 'finished_at', 'cancel_requested')
redis.call('HSET', key, 'status', 'queued', 'attempts', 0, 'scheduled_at', now,
  'hist_n', h, 'h:' .. h, history_line('queued', 0, now, 'retried by request'))
redis.call('ZREM', q .. ':failed', id)
redis.call('RPUSH', q .. ':ready', id)
emit(tag, maxlen, {event_line(id, tenant, f[4], queue, 'queued', 0, now)})
wake(tag)
return {'queued'}
