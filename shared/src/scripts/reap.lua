-- REAP: takes back jobs whose lease expired (their worker died or hung). The lost
-- run counts as an attempt: the job goes back to its ready list, or ends `failed`
-- when that was its last attempt, so a job that kills its worker cannot loop.
-- Also forgets silent workers and prunes indexes whose records have expired.
-- KEYS[1]  the events stream (routes the call)
-- ARGV[1]  tag   ARGV[2] limit per queue   ARGV[3] events maxlen   ARGV[4] failed ttl s
-- ARGV[5]  index horizon ms (entries older than this are pruned)   ARGV[6] worker silence ms
-- Returns the number of jobs taken back.
local tag, limit, maxlen, failed_ttl = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local horizon, silence = tonumber(ARGV[5]), tonumber(ARGV[6])
local now = now_ms()
local lines, reaped, requeued = {}, 0, false
local err = 'lease expired: the worker running this attempt stopped responding'

for _, queue in ipairs(redis.call('SMEMBERS', tag .. ':queues')) do
  local q = tag .. ':q:' .. queue
  local expired = redis.call('ZRANGEBYSCORE', q .. ':running', '-inf', now, 'LIMIT', 0, limit)
  local back = {}
  for _, id in ipairs(expired) do
    local key = tag .. ':job:' .. id
    local f = redis.call('HMGET', key, 'status', 'attempts', 'max_attempts', 'tenant', 'type',
      'hist_n', 'cancel_requested')
    if f[1] == 'running' then
      local attempt = tonumber(f[2])
      local h = tonumber(f[6]) + 1
      local status = 'queued'
      if f[7] == '1' then
        status = 'cancelled'
      elseif attempt >= tonumber(f[3]) then
        status = 'failed'
      end
      if status == 'queued' then
        redis.call('HSET', key, 'status', status, 'last_error', err,
          'hist_n', h, 'h:' .. h, history_line(status, attempt, now, err))
        back[#back + 1] = id
      else
        redis.call('HSET', key, 'status', status, 'finished_at', now, 'last_error', err,
          'hist_n', h, 'h:' .. h, history_line(status, attempt, now, err))
        if status == 'failed' then redis.call('ZADD', q .. ':failed', now, id) end
        redis.call('EXPIRE', key, failed_ttl)
      end
      lines[#lines + 1] = event_line(id, f[4], f[5], queue, status, attempt, now, err)
      reaped = reaped + 1
    end
  end
  if #expired > 0 then chunked('ZREM', q .. ':running', expired) end
  if #back > 0 then
    chunked('RPUSH', q .. ':ready', back)
    requeued = true
  end
  redis.call('ZREMRANGEBYSCORE', q .. ':failed', '-inf', now - failed_ttl * 1000)
end

for _, tenant in ipairs(redis.call('SMEMBERS', tag .. ':tenants')) do
  redis.call('ZREMRANGEBYSCORE', tag .. ':t:' .. tenant .. ':jobs', '-inf', now - horizon)
end
redis.call('ZREMRANGEBYSCORE', tag .. ':workers', '-inf', now - silence)

emit(tag, maxlen, lines)
if requeued then wake(tag) end
return reaped
