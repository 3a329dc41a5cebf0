-- RETRY_FAILED: queues again, each with a fresh attempt budget, up to `limit`
-- failed jobs of one tenant on one queue, oldest failure first. Runs go on
-- counting (see retry.lua).
-- KEYS[1]  the queue's failed zset
-- ARGV[1]  tag   ARGV[2] queue   ARGV[3] tenant   ARGV[4] limit   ARGV[5] events maxlen
-- Returns {retried, more}: more = 1 when failed jobs may remain (call again).
local tag, queue, tenant, limit, maxlen = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local q = tag .. ':q:' .. queue
local now = now_ms()
local w = writer(tag, now)
local prefix = tenant .. '\t'
local retried, offset, scanned_all = 0, 0, false
local done = {}
-- Other tenants' jobs share the set: look at no more than ten times `limit` entries.
while retried < limit and offset < limit * 10 do
  local ids = redis.call('ZRANGE', KEYS[1], offset, offset + 499)
  if #ids < 500 then scanned_all = true end
  if #ids == 0 then break end
  offset = offset + #ids
  local states = hmget(tag .. ':state', ids)
  local specs = hmget(tag .. ':spec', ids)
  for i, id in ipairs(ids) do
    local status, _, _, _, _, history, runs, flags, total = parse_state(states[i])
    if retried < limit and status == 'failed' and specs[i] and string.sub(specs[i], 1, #prefix) == prefix then
      if not has(flags, 'l') then push(w, q .. ':ready', id) end
      transition(w, id, spec_meta(specs[i]), status, 'queued', 0, w.now, 0, 0, runs, 'l', total, history)
      done[#done + 1] = id
      retried = retried + 1
    end
  end
end
if #done > 0 then chunked('ZREM', KEYS[1], done) end
flush(w, maxlen)
if retried > 0 then wake(tag) end
-- More may remain when the limit or the scan bound stopped this call early.
local more = 0
if (retried >= limit or not scanned_all) and redis.call('ZCARD', KEYS[1]) > 0 then more = 1 end
return {retried, more}
