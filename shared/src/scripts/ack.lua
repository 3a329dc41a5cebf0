-- ACK: records the outcomes of a batch of runs. An outcome counts only when its
-- run is the job's latest (`runs` = its token) and still open (flag `o`): the
-- job is running it, or the reaper took it back and nobody has claimed it
-- since, in which case the outcome a worker comes back with after a pause or
-- a partition is the truth and replaces the reaper's verdict. Anything else is
-- stale and ignored.
-- KEYS[1]  the events stream (routes the call)
-- ARGV[1]  tag   ARGV[2] events maxlen   ARGV[3] succeeded ttl ms   ARGV[4] failed ttl ms
-- ARGV[5]  the most succeeded records kept per queue and tenant (0 = no cap;
--          SUCCEEDED_MAX_PER_QUEUE): past it the oldest are deleted at once
-- ARGV[6]  number of queues g, then g groups: queue, count k, and k outcomes of 5
--          fields: id meta (tenant \t type \t queue) token verdict text
--   verdict: ok (text = result JSON) | fail (no retry: permanent, or the last
--            attempt; text = error) | <ms> (retry after that many ms; text = error)
-- A job whose cancellation was requested while it ran ends `cancelled` instead
-- of retrying or failing.
-- Then deletes records whose retention ended, twice as many as it finished (see
-- lib.lua `sweep`).
-- Returns the number of stale outcomes ignored.
local tag, maxlen, ok_ttl, failed_ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local ok_cap = tonumber(ARGV[5])
local now = now_ms()
local w = writer(tag, now)
local ok_expires, failed_expires = tostring(now + ok_ttl), tostring(now + failed_ttl)
local stale, retried, outcomes = 0, false, 0
-- Records deleted on success (`ok:0`), the listing indexes they leave, and the
-- `tenant \t queue` pairs that may have nothing left (see lib.lua `free_queues`).
local dropped, unlisted, emptied = {}, {}, {}
-- With a cap on succeeded records: `id \t expires` of those kept, per
-- `q:<queue>:t:<tenant>:succeeded` list (oldest first), and those past the cap.
local kept, evicted = {}, {}

local at = 7
for _ = 1, tonumber(ARGV[6]) do
  local queue, k = ARGV[at], tonumber(ARGV[at + 1])
  outcomes = outcomes + k
  local first = at + 2
  at = first + 5 * k
  local ids = {}
  for j = 0, k - 1 do ids[j + 1] = ARGV[first + 5 * j] end
  local states = hmget(tag .. ':state', ids)
  local leaving, nleaving = {}, 0
  local q = tag .. ':q:' .. queue
  for j = 0, k - 1 do
    local b = first + 5 * j
    local id, meta, token, verdict, text = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
    local status, attempt, due, cancel, _, history, runs, flags, total = parse_state(states[j + 1])
    if runs ~= token or not (status == 'running' or has(flags, 'o')) then
      stale = stale + 1
    else
      local failed = q .. ':t:' .. tenant_of(meta) .. ':failed'
      if status == 'running' then
        nleaving = nleaving + 1
        leaving[nleaving] = id
      elseif status == 'failed' then
        redis.call('ZREM', failed, id)
      end
      -- A running job's flags are `o` alone (its claim took it off the list).
      if status == 'running' then flags = '' else flags = closed(flags) end
      -- `ok:<secs>`: the job's own retention; `ok:0` deletes the record at once.
      local keep = nil
      if verdict ~= 'ok' and string.sub(verdict, 1, 3) == 'ok:' then keep = string.sub(verdict, 4) end
      if keep == '0' then
        local c = w.counts[meta]
        if not c then
          c = {}
          w.counts[meta] = c
        end
        c[status] = (c[status] or 0) - 1
        event(w, id, meta, 'succeeded', attempt, nil)
        dropped[#dropped + 1] = id
        local tenant = tenant_of(meta)
        w.freed[tenant] = (w.freed[tenant] or 0) + redis.call('HSTRLEN', tag .. ':spec', id)
        local index = tag .. ':t:' .. tenant .. ':jobs'
        if not unlisted[index] then unlisted[index] = {} end
        table.insert(unlisted[index], id)
        emptied[tenant .. '\t' .. queue] = true
      elseif verdict == 'ok' or keep then
        if text ~= 'null' then
          w.result[#w.result + 1] = id
          w.result[#w.result + 1] = text
        end
        local expires = ok_expires
        if keep then expires = tostring(now + tonumber(keep) * 1000) end
        transition(w, id, meta, status, 'succeeded', attempt, due, cancel, expires, runs, flags, total, history)
        if ok_cap > 0 then
          local list = q .. ':t:' .. tenant_of(meta) .. ':succeeded'
          if not kept[list] then kept[list] = {} end
          table.insert(kept[list], id .. '\t' .. expires)
        end
      elseif cancel == '1' then
        transition(w, id, meta, status, 'cancelled', attempt, due, cancel, failed_expires, runs, flags, total,
          history, text)
      elseif verdict == 'fail' then
        redis.call('ZADD', failed, now, id)
        transition(w, id, meta, status, 'failed', attempt, due, cancel, failed_expires, runs, flags, total,
          history, text)
      else
        local retry_at = now + tonumber(verdict)
        redis.call('ZADD', q .. ':retry', retry_at, id)
        due_at(tag, queue, retry_at)
        transition(w, id, meta, status, 'retrying', attempt, retry_at, cancel, 0, runs, flags, total, history,
          text)
        retried = true
      end
    end
  end
  if nleaving > 0 then
    chunked('HDEL', q .. ':running', leaving)
    idle_check(tag, queue)
  end
end

for list, entries in pairs(kept) do
  chunked('RPUSH', list, entries)
  local over = redis.call('LLEN', list) - ok_cap
  if over > 0 then
    for _, entry in ipairs(redis.call('LPOP', list, over)) do evicted[#evicted + 1] = entry end
  end
end

-- Jobs that asked to be forgotten on success: their records go now.
if #dropped > 0 then
  for index, ids in pairs(unlisted) do chunked('ZREM', index, ids) end
  for _, column in ipairs({':spec', ':state', ':result'}) do chunked('HDEL', tag .. column, dropped) end
end
-- Retention keeps pace with finishing: twice as many expired records as this
-- call finished outcomes may go with it.
local _, _, swept_from = sweep(w, now, 2 * (outcomes - stale) + 10)
for pair in pairs(swept_from) do emptied[pair] = true end
flush(w, maxlen)
-- Succeeded records past the cap go too, once this call's states are written:
-- each that is still the success it was (not retried, not deleted since).
if #evicted > 0 then
  local ids, expiries = {}, {}
  for i, entry in ipairs(evicted) do ids[i], expiries[i] = string.match(entry, '^([^\t]*)\t(.*)$') end
  local states = hmget(tag .. ':state', ids)
  local gone, ended = {}, {}
  for i, id in ipairs(ids) do
    local status, _, _, _, expires = parse_state(states[i])
    if status == 'succeeded' and expires == expiries[i] then
      gone[#gone + 1] = id
      ended[#ended + 1] = 'succeeded'
    end
  end
  if #gone > 0 then
    local v = writer(tag, now)
    forget(v, gone, ended, emptied)
    flush(v, maxlen)
  end
end
free_queues(tag, emptied)
if retried then wake(tag) end
return stale
