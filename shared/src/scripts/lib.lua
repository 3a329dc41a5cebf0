-- Helpers prepended to every script (see scripts.rs). Event and history lines are
-- tab-separated; callers strip tabs and newlines from error text before it gets here.

-- Server time in milliseconds: one clock for every worker and API instance.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- One status event: job_id tenant type queue status attempt at_ms error.
local function event_line(id, tenant, jtype, queue, status, attempt, at, err)
  return id .. '\t' .. tenant .. '\t' .. jtype .. '\t' .. queue .. '\t' .. status .. '\t' ..
    attempt .. '\t' .. at .. '\t' .. (err or '')
end

-- One history entry, stored in the record as field h:<n>: status attempt at_ms error.
local function history_line(status, attempt, at, err)
  return status .. '\t' .. attempt .. '\t' .. at .. '\t' .. (err or '')
end

-- Appends all of a call's transitions as one stream entry, trimmed approximately.
local function emit(tag, maxlen, lines)
  if #lines > 0 then
    redis.call('XADD', tag .. ':events', 'MAXLEN', '~', maxlen, '*', 'e', table.concat(lines, '\n'))
  end
end

-- Wakes idle workers blocked on the wake stream.
local function wake(tag)
  redis.call('XADD', tag .. ':wake', 'MAXLEN', '~', 100, '*', 'w', '1')
end

-- Calls a variadic command with `prefix_args` followed by `items`, in chunks small
-- enough for Lua's unpack limit, so no batch size can wedge a script.
local function chunked(cmd, key, items, step)
  step = step or 1
  local chunk = 512 * step
  for i = 1, #items, chunk do
    local last = math.min(i + chunk - 1, #items)
    redis.call(cmd, key, unpack(items, i, last))
  end
end
