-- RETRY: a failed or cancelled job is queued again with a fresh attempt budget.
-- Its runs go on counting, so no outcome of an earlier run can land on the new one.
-- KEYS[1]  the state hash (routes the call)
-- ARGV[1]  tag   ARGV[2] job id   ARGV[3] tenant   ARGV[4] events maxlen
-- Returns {'queued'} | {'conflict', status} | {'not_found'}
local tag, id, tenant, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local spec = redis.call('HGET', tag .. ':spec', id)
if not spec then return {'not_found'} end
local meta, queue = spec_meta_queue(spec)
if string.sub(meta, 1, #tenant + 1) ~= tenant .. '\t' then return {'not_found'} end
local status, _, _, _, _, history, runs, flags, total = parse_state(redis.call('HGET', tag .. ':state', id))
if status ~= 'failed' and status ~= 'cancelled' then return {'conflict', status} end
local q = tag .. ':q:' .. queue
local now = now_ms()
local w = writer(tag, now)
-- An id still on the list from before the job ended is where it queues again.
if not has(flags, 'l') then push_ready(w, queue, meta, id) end
transition(w, id, meta, status, 'queued', 0, w.now, 0, 0, runs, 'l', total, history)
redis.call('ZREM', q .. ':t:' .. tenant .. ':failed', id)
flush(w, maxlen)
wake(tag)
return {'queued'}
