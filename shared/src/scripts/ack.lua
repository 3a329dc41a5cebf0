-- ACK: records the outcomes of a batch of attempts. An outcome whose attempt no
-- longer holds the job (its lease was reaped and the job re-claimed, or it was
-- released) is ignored: the attempt number is the fencing token.
-- KEYS[1]  the events stream (routes the call)
-- ARGV[1]  tag   ARGV[2] events maxlen   ARGV[3] succeeded ttl s   ARGV[4] failed ttl s
-- ARGV[5]  count n
-- ARGV[6..] per outcome, 6 fields: id queue attempt kind (ok|retry|fail) retry_delay_ms text
--           (text = the result JSON for ok, the error message otherwise)
-- Returns the number of stale outcomes ignored.
local tag, maxlen, ok_ttl, failed_ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local n = tonumber(ARGV[5])
local now = now_ms()
local lines, stale, retried = {}, 0, false
local done = {}   -- queue -> ids to drop from the running set

for i = 0, n - 1 do
  local b = 6 + i * 6
  local id, queue, attempt, kind, delay, text =
    ARGV[b], ARGV[b + 1], tonumber(ARGV[b + 2]), ARGV[b + 3], tonumber(ARGV[b + 4]), ARGV[b + 5]
  local key = tag .. ':job:' .. id
  local f = redis.call('HMGET', key, 'status', 'attempts', 'max_attempts', 'cancel_requested',
    'tenant', 'type', 'hist_n')
  if f[1] ~= 'running' or tonumber(f[2]) ~= attempt then
    stale = stale + 1
  else
    done[queue] = done[queue] or {}
    table.insert(done[queue], id)
    local h = tonumber(f[7]) + 1
    local status, err = nil, text
    if kind == 'ok' then
      status, err = 'succeeded', nil
      redis.call('HSET', key, 'status', status, 'finished_at', now, 'result', text,
        'hist_n', h, 'h:' .. h, history_line(status, attempt, now))
      redis.call('EXPIRE', key, ok_ttl)
    elseif kind == 'retry' and f[4] ~= '1' and attempt < tonumber(f[3]) then
      status = 'retrying'
      local due = now + delay
      redis.call('HSET', key, 'status', status, 'scheduled_at', due, 'last_error', text,
        'hist_n', h, 'h:' .. h, history_line(status, attempt, now, text))
      redis.call('ZADD', tag .. ':q:' .. queue .. ':retry', due, id)
      retried = true
    else
      -- A job whose cancellation was requested while it ran ends cancelled, not failed.
      status = 'failed'
      if f[4] == '1' then status = 'cancelled' end
      redis.call('HSET', key, 'status', status, 'finished_at', now, 'last_error', text,
        'hist_n', h, 'h:' .. h, history_line(status, attempt, now, text))
      if status == 'failed' then
        redis.call('ZADD', tag .. ':q:' .. queue .. ':failed', now, id)
      end
      redis.call('EXPIRE', key, failed_ttl)
    end
    lines[#lines + 1] = event_line(id, f[5], f[6], queue, status, attempt, now, err)
  end
end

for queue, ids in pairs(done) do
  chunked('ZREM', tag .. ':q:' .. queue .. ':running', ids)
end
emit(tag, maxlen, lines)
if retried then wake(tag) end
return stale
