-- CLAIM: leases up to `limit` ready jobs to one worker, first moving due scheduled
-- and retrying jobs onto their ready lists (at most 1,000 per list per call).
-- Each claim starts a new run of its job: `runs` + 1 is the claim's fencing
-- token, which every later call about this run names.
-- KEYS[1]  the wake stream (routes the call)
-- ARGV[1]  tag   ARGV[2] lease ms   ARGV[3] limit   ARGV[4] events maxlen
-- ARGV[5]  turn: a counter the worker advances each claim
-- ARGV[6]  failed ttl ms (a job cancelled before its claim ends `cancelled` here)
-- ARGV[7]  worker id   ARGV[8] this claim's number, counted by the worker
-- ARGV[9..] queue names, in priority order (none = every known queue, taken in
--          turn from a rotating start so that no queue starves another)
-- Returns {n, wake_id, ms_until_next_due, <4 fields per job: id attempt token spec>…}.
-- A claim short of its limit found every queue drained: it also says where to
-- wait from (the wake stream's last id, and when the next scheduled or retrying
-- job is due, -1 = none), so that the worker's next step is that wait rather
-- than a claim that would find nothing. A full claim returns wake_id ''.
-- Each lease names its holder and the claim that took it (`<expiry> \t <worker>
-- \t <claim>`), so a worker whose claim's reply was lost can hand those jobs back.
local tag, lease, limit, maxlen = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local failed_ttl = tonumber(ARGV[6])
local holder = '\t' .. ARGV[7] .. '\t' .. ARGV[8]
local queues = {}
for i = 9, #ARGV do queues[#queues + 1] = ARGV[i] end
if #queues == 0 then
  local known = redis.call('SMEMBERS', tag .. ':queues')
  table.sort(known)
  local start = tonumber(ARGV[5]) % math.max(#known, 1)
  for i = 1, #known do queues[i] = known[(start + i - 1) % #known + 1] end
end

local now = now_ms()
local w = writer(tag, now)
local out = {0, '', -1}
local claimed, nout = 0, 3

-- Moves due jobs of one zset to the ready list (status queued). A job whose id
-- is still on the list from before (see lib.lua, flag `l`) is not pushed twice.
local function promote(queue, zkey)
  local due = redis.call('ZRANGEBYSCORE', zkey, '-inf', now, 'LIMIT', 0, 1000)
  if #due == 0 then return false end
  local states = hmget(tag .. ':state', due)
  local specs = hmget(tag .. ':spec', due)
  for i, id in ipairs(due) do
    local status, attempts, due_at, cancel, _, history, runs, flags, total = parse_state(states[i])
    if (status == 'scheduled' or status == 'retrying') and specs[i] then
      if not has(flags, 'l') then push(w, tag .. ':q:' .. queue .. ':ready', id) end
      transition(w, id, spec_meta(specs[i]), status, 'queued', attempts, due_at, cancel, 0, runs, listed(flags, true),
        total, history)
    end
  end
  chunked('ZREM', zkey, due)
  return true
end

local cancelled_expires = now + failed_ttl
for _, queue in ipairs(queues) do
  if claimed >= limit then break end
  local q = tag .. ':q:' .. queue
  local promoted = promote(queue, q .. ':scheduled')
  promoted = promote(queue, q .. ':retry') or promoted
  if promoted then flush(w, maxlen) end
  local ids = redis.call('LPOP', q .. ':ready', limit - claimed)
  if ids then
    local states = hmget(tag .. ':state', ids)
    local specs = hmget(tag .. ':spec', ids)
    local leases, nleases = {RUNNING_PIN, RUNNING_PIN_VALUE}, 2
    local expiry = tostring(now + lease) .. holder
    for i, id in ipairs(ids) do
      local status, attempts, due, cancel, expires, history, runs, flags, total = parse_state(states[i])
      if status == 'queued' and specs[i] then
        local meta = spec_meta(specs[i])
        if cancel == '1' then
          -- Cancelled while it waited: it ends here and never reaches a handler.
          transition(w, id, meta, status, 'cancelled', attempts, due, cancel, cancelled_expires, runs, '', total,
            history)
        else
          local attempt, token = successors[attempts] or succ(attempts), successors[runs] or succ(runs)
          transition(w, id, meta, status, 'running', attempt, due, cancel, 0, token, 'o', total, history)
          leases[nleases + 1] = id
          leases[nleases + 2] = expiry
          nleases = nleases + 2
          out[nout + 1] = id
          out[nout + 2] = attempt
          out[nout + 3] = token
          out[nout + 4] = specs[i]
          nout = nout + 4
          claimed = claimed + 1
        end
      elseif status and has(flags, 'l') then
        -- The id outlived its place in the queue (the job was cancelled, or ended
        -- late): now it is off the list.
        reflag(w, id, status, attempts, due, cancel, expires, runs, listed(flags, false), total, history)
      end
    end
    if nleases > 2 then chunked('HSET', q .. ':running', leases, 2) end
  end
end

flush(w, maxlen)
out[1] = claimed
if claimed == limit then return out end

local last = redis.call('XREVRANGE', tag .. ':wake', '+', '-', 'COUNT', 1)
out[2] = '0-0'
if #last > 0 then out[2] = last[1][1] end
for _, queue in ipairs(queues) do
  for _, z in ipairs({':scheduled', ':retry'}) do
    local first = redis.call('ZRANGE', tag .. ':q:' .. queue .. z, 0, 0, 'WITHSCORES')
    if #first > 0 then
      local wait = math.max(0, tonumber(first[2]) - now)
      if out[3] < 0 or wait < out[3] then out[3] = wait end
    end
  end
end
return out
