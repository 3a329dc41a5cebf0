-- RETRY: a failed or cancelled job is queued again with a fresh attempt budget.
-- Its runs go on counting, so no outcome of an earlier run can land on the new one.
-- KEYS[1]  the state hash (routes the call)
-- A retry takes a token from the tenant's submission bucket, as a job does.
-- ARGV[1]  tag   ARGV[2] job id   ARGV[3] tenant   ARGV[4] events maxlen
-- ARGV[5]  rate limit, per second (0 = none)   ARGV[6] burst
-- Returns {'queued'} | {'conflict', status} | {'not_found'} | {'limited', ms}
local tag, id, tenant, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local rate, burst = tonumber(ARGV[5]), tonumber(ARGV[6])
local spec = redis.call('HGET', tag .. ':spec', id)
if not spec then return {'not_found'} end
local meta, queue = spec_meta_queue(spec)
if string.sub(meta, 1, #tenant + 1) ~= tenant .. '\t' then return {'not_found'} end
local status, _, _, _, _, history, runs, flags, total = parse_state(redis.call('HGET', tag .. ':state', id))
if status ~= 'failed' and status ~= 'cancelled' then return {'conflict', status} end
local q = tag .. ':q:' .. queue
local now = now_ms()
local held = tokens(tag, tenant, rate, burst, now)
if held < 1 then return {'limited', wait_for(1, held, rate)} end
spend(tag, tenant, 1, held, rate, burst, now)
local w = writer(tag, now)
-- An id still on the list from before the job ended is where it queues again.
if not has(flags, 'l') then push_ready(w, queue, meta, id) end
transition(w, id, meta, status, 'queued', 0, w.now, 0, 0, runs, 'l', total, history)
redis.call('ZREM', q .. ':t:' .. tenant .. ':failed', id)
flush(w, maxlen)
wake(tag)
return {'queued'}
