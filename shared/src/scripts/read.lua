-- READ: job records, for the API (read-only).
-- KEYS[1]  the spec hash (routes the call)
-- ARGV[1]  tag   ARGV[2] 'full', or 'lean' for specs without their payload
-- ARGV[3]  the events stream's key, or '' (see below)   ARGV[4..] job ids
-- Returns per id 3 values: spec, state (with its history), result (false when
-- absent); then, given the stream's key, its last entry's id and event body
-- (false, false when empty), read in the same instant as the records.
local tag, lean, stream = ARGV[1], ARGV[2] == 'lean', ARGV[3]
local ids = {}
for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
local specs = hmget(tag .. ':spec', ids)
local states = hmget(tag .. ':state', ids)
local results = hmget(tag .. ':result', ids)
local out = {}
for i = 1, #ids do
  local spec = specs[i]
  -- The payload is the last field, JSON in which a tab is escaped: the spec
  -- without it ends at its last tab.
  if lean and spec then spec = string.match(spec, '^(.*\t)') or spec end
  out[#out + 1] = spec
  out[#out + 1] = states[i]
  out[#out + 1] = results[i]
end
if stream ~= '' then
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
  local body = false
  if last then
    local fields = last[2]
    for f = 1, #fields, 2 do
      if fields[f] == 'e' then body = fields[f + 1] end
    end
  end
  out[#out + 1] = last and last[1] or false
  out[#out + 1] = body
end
return out
