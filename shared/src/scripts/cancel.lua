-- CANCEL: queued, scheduled and retrying jobs become `cancelled`; a running job is
-- flagged (its handler sees the flag at the next heartbeat, and it will not be retried).
-- A queued job's id stays on the shared ready list, marked (flag `l`), until a
-- claim pops and skips it: cancelling costs O(1) however long the list is.
-- KEYS[1]  the state hash (routes the call)
-- A cancel takes a token from the tenant's submission bucket, as a job does.
-- ARGV[1]  tag   ARGV[2] job id   ARGV[3] tenant   ARGV[4] events maxlen   ARGV[5] failed ttl ms
-- ARGV[6]  rate limit, per second (0 = none)   ARGV[7] burst
-- Returns {'cancelled'} | {'flagged'} | {'conflict', status} | {'not_found'} | {'limited', ms}
local tag, id, tenant, maxlen, failed_ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local rate, burst = tonumber(ARGV[6]), tonumber(ARGV[7])
local spec = redis.call('HGET', tag .. ':spec', id)
if not spec then return {'not_found'} end
local meta, queue = spec_meta_queue(spec)
if string.sub(meta, 1, #tenant + 1) ~= tenant .. '\t' then return {'not_found'} end
local raw = redis.call('HGET', tag .. ':state', id)
local status, attempts, due, _, expires, history, runs, flags, total = parse_state(raw)
local now = now_ms()
local held = tokens(tag, tenant, rate, burst, now)
if held < 1 then return {'limited', wait_for(1, held, rate)} end
spend(tag, tenant, 1, held, rate, burst, now)
local w = writer(tag, now)
local q = tag .. ':q:' .. queue
if status == 'running' then
  reflag(w, id, status, attempts, due, '1', expires, runs, flags, total, history)
  flush(w, maxlen)
  return {'flagged'}
elseif status == 'scheduled' then
  redis.call('ZREM', q .. ':scheduled', id)
elseif status == 'retrying' then
  redis.call('ZREM', q .. ':retry', id)
elseif status ~= 'queued' then
  return {'conflict', status}
end
transition(w, id, meta, status, 'cancelled', attempts, due, 0, now + failed_ttl, runs, closed(flags), total,
  history)
flush(w, maxlen)
return {'cancelled'}
