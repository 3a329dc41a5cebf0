-- READ: job records, for the API (read-only).
-- KEYS[1]  the spec hash (routes the call)
-- ARGV[1]  tag   ARGV[2..] job ids
-- Returns per id 3 values: spec, state (with its history), result (false when absent).
local tag = ARGV[1]
local ids = {}
for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
local specs = hmget(tag .. ':spec', ids)
local states = hmget(tag .. ':state', ids)
local results = hmget(tag .. ':result', ids)
local out = {}
for i = 1, #ids do
  out[#out + 1] = specs[i]
  out[#out + 1] = states[i]
  out[#out + 1] = results[i]
end
return out
