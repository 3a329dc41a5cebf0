-- CLAIM: leases up to `limit` ready jobs to one worker, first moving due scheduled
-- and retrying jobs onto their ready lists (at most 100 queues and 1,000 jobs per
-- list per call, found through the `due` index).
-- Each claim starts a new run of its job: `runs` + 1 is the claim's fencing
-- token, which every later call about this run names.
-- Tenants take turns: within a queue the claim visits the tenants with ready
-- jobs in ring order (`q:<queue>:ring`), taking an even share of what is left
-- from each (at least MIN_SHARE, so that a claim of 50 over 100 tenants costs a
-- few turns, not 50), and a worker serving every queue visits the queues with ready jobs
-- in ring order too (`ready`); both rings rotate, so the next claim starts where
-- this one stopped. A tenant at its cap of running jobs is passed over.
-- KEYS[1]  the wake stream (routes the call)
-- ARGV[1]  tag   ARGV[2] lease ms   ARGV[3] limit   ARGV[4] events maxlen
-- ARGV[5]  failed ttl ms (a job cancelled before its claim ends `cancelled` here)
-- ARGV[6]  worker id   ARGV[7] this claim's number, counted by the worker
-- ARGV[8]  a tenant's cap on running jobs, all queues (0 = none)
-- ARGV[9]  caps per queue, `queue=n,queue=n` ('' = none)
-- ARGV[10..] queue names, in priority order (none = every queue with ready jobs, in turn)
-- Returns {n, wake_id, ms_until_next_due, <4 fields per job: id attempt token spec>…}.
-- A claim short of its limit found every queue drained: it also says where to
-- wait from (the wake stream's last id, and when the next scheduled or retrying
-- job is due, -1 = none), so that the worker's next step is that wait rather
-- than a claim that would find nothing. A full claim returns wake_id ''.
-- Each lease names its holder and the claim that took it (`<expiry> \t <worker>
-- \t <claim>`), so a worker whose claim's reply was lost can hand those jobs back.
local tag, lease, limit, maxlen = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local failed_ttl = tonumber(ARGV[5])
local holder = '\t' .. ARGV[6] .. '\t' .. ARGV[7]
local tenant_cap = tonumber(ARGV[8])
local queue_caps = {}
for queue, cap in string.gmatch(ARGV[9], '([^,=]+)=(%d+)') do queue_caps[queue] = tonumber(cap) end
local named = {}
for i = 10, #ARGV do named[#named + 1] = ARGV[i] end

local MIN_SHARE = 8
local now = now_ms()
local w = writer(tag, now)
local out = {0, '', -1}
local claimed, nout = 0, 3

-- Moves due jobs of one zset to their ready lists (status queued). A job whose
-- id is still on its list from before (flag `l`) is not pushed twice.
local function promote(queue, zkey)
  local due = redis.call('ZRANGEBYSCORE', zkey, '-inf', now, 'LIMIT', 0, 1000)
  if #due == 0 then return end
  local states = hmget(tag .. ':state', due)
  local specs = hmget(tag .. ':spec', due)
  for i, id in ipairs(due) do
    local status, attempts, due_at, cancel, _, history, runs, flags, total = parse_state(states[i])
    if (status == 'scheduled' or status == 'retrying') and specs[i] then
      local meta = spec_meta(specs[i])
      if not has(flags, 'l') then push_ready(w, queue, meta, id) end
      transition(w, id, meta, status, 'queued', attempts, due_at, cancel, 0, runs, listed(flags, true), total, history)
    end
  end
  chunked('ZREM', zkey, due)
end

-- Queues whose earliest scheduled or retrying job is due: promote them, then
-- score each by what is due next there, or drop it from the index.
for _, queue in ipairs(redis.call('ZRANGEBYSCORE', tag .. ':due', '-inf', now, 'LIMIT', 0, 100)) do
  local q = tag .. ':q:' .. queue
  promote(queue, q .. ':scheduled')
  promote(queue, q .. ':retry')
  local next_due
  for _, z in ipairs({':scheduled', ':retry'}) do
    local first = redis.call('ZRANGE', q .. z, 0, 0, 'WITHSCORES')
    if #first > 0 and (not next_due or tonumber(first[2]) < next_due) then next_due = tonumber(first[2]) end
  end
  if next_due then redis.call('ZADD', tag .. ':due', next_due, queue) else redis.call('ZREM', tag .. ':due', queue) end
end
flush(w, maxlen)

-- Running jobs per tenant (read from its counts only when a cap applies), with
-- those this call takes added as it goes.
local running = {}
local function room(tenant, queue)
  if tenant_cap == 0 and not queue_caps[queue] then return limit end
  local r = running[tenant]
  if not r then
    local all = 0
    if tenant_cap > 0 then
      local fields = {}
      for i, name in ipairs(redis.call('SMEMBERS', tag .. ':t:' .. tenant .. ':queues')) do
        fields[i] = name .. '\trunning'
      end
      if #fields > 0 then
        for _, n in ipairs(redis.call('HMGET', counts_key(tag, tenant), unpack(fields))) do all = all + (tonumber(n) or 0) end
      end
    end
    r = { all = all, queues = {} }
    running[tenant] = r
  end
  if not r.queues[queue] then
    r.queues[queue] = tonumber(redis.call('HGET', counts_key(tag, tenant), queue .. '\trunning')) or 0
  end
  local free = limit
  if tenant_cap > 0 then free = math.min(free, tenant_cap - r.all) end
  if queue_caps[queue] then free = math.min(free, queue_caps[queue] - r.queues[queue]) end
  return free
end

-- Takes `queue` off `ready`: it is at the tail just after its turn (`in_ring`),
-- or somewhere in it (a worker naming its queues emptied it).
local function unready(queue, in_ring)
  if in_ring then
    redis.call('RPOP', tag .. ':ready')
  else
    redis.call('LREM', tag .. ':ready', 1, queue)
  end
end

-- Takes up to `wanted` jobs from `queue`, tenant by tenant; returns how many.
-- A tenant whose list ran dry leaves the ring (it is at the ring's tail just
-- after its turn), and a queue whose ring empties leaves `ready`.
local function take(queue, wanted, in_ring)
  local q = tag .. ':q:' .. queue
  local ring = q .. ':ring'
  local tenants = redis.call('LLEN', ring)
  if tenants == 0 then
    if in_ring then unready(queue, true) end
    return 0
  end
  local ids, owners = {}, {}
  local got = 0
  -- A share a tenant could not fill (it had fewer jobs ready, or is at its
  -- running cap) goes to the tenants after it: up to as many visits again, so
  -- a tenant with one job ready never leaves the claim short while another has
  -- thousands (slots would sit idle until the next claim).
  local visits = math.min(tenants, math.ceil(wanted / MIN_SHARE))
  local visit = 0
  while got < wanted and tenants > 0 and visit < 2 * visits do
    visit = visit + 1
    local tenant = redis.call('LMOVE', ring, ring, 'LEFT', 'RIGHT')
    local share = math.ceil((wanted - got) / math.max(visits - visit + 1, 1))
    local k = math.min(share, room(tenant, queue))
    if k > 0 then
      local list = ready_key(tag, queue, tenant)
      local popped = redis.call('LPOP', list, k)
      local n = popped and #popped or 0
      for i = 1, n do
        ids[got + i] = popped[i]
        owners[got + i] = tenant
      end
      got = got + n
      if n < k or redis.call('LLEN', list) == 0 then
        redis.call('RPOP', ring)
        tenants = tenants - 1
      end
    end
  end
  if tenants == 0 then unready(queue, in_ring) end
  if got == 0 then return 0 end

  local states = hmget(tag .. ':state', ids)
  local specs = hmget(tag .. ':spec', ids)
  local leases, nleases = {RUNNING_PIN, RUNNING_PIN_VALUE}, 2
  local expiry = tostring(now + lease) .. holder
  local cancelled_expires = now + failed_ttl
  local taken = 0
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
        taken = taken + 1
        local r = running[owners[i]]
        if r then
          r.all = r.all + 1
          r.queues[queue] = (r.queues[queue] or 0) + 1
        end
      end
    elseif status and has(flags, 'l') then
      -- The id outlived its place in the queue (the job was cancelled, or ended
      -- late): now it is off the list.
      reflag(w, id, status, attempts, due, cancel, expires, runs, listed(flags, false), total, history)
    end
  end
  if nleases > 2 then
    chunked('HSET', q .. ':running', leases, 2)
    redis.call('SADD', tag .. ':busy', queue)
  end
  return taken
end

if #named > 0 then
  for _, queue in ipairs(named) do
    if claimed >= limit then break end
    claimed = claimed + take(queue, limit - claimed, false)
  end
else
  -- Each queue with ready jobs once at most, from where the last claim stopped.
  for _ = 1, redis.call('LLEN', tag .. ':ready') do
    if claimed >= limit then break end
    local queue = redis.call('LMOVE', tag .. ':ready', tag .. ':ready', 'LEFT', 'RIGHT')
    if not queue then break end
    claimed = claimed + take(queue, limit - claimed, true)
  end
end

flush(w, maxlen)
out[1] = claimed
if claimed == limit then return out end

local last = redis.call('XREVRANGE', tag .. ':wake', '+', '-', 'COUNT', 1)
out[2] = '0-0'
if #last > 0 then out[2] = last[1][1] end
local next_due
if #named > 0 then
  for _, queue in ipairs(named) do
    local at = tonumber(redis.call('ZSCORE', tag .. ':due', queue))
    if at and (not next_due or at < next_due) then next_due = at end
  end
else
  local first = redis.call('ZRANGE', tag .. ':due', 0, 0, 'WITHSCORES')
  if #first > 0 then next_due = tonumber(first[2]) end
end
if next_due then out[3] = math.max(0, next_due - now) end
return out
