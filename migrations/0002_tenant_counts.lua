-- 0002_tenant_counts: per-tenant counts of jobs by queue and status
-- (`t:<tenant>:counts`, fields `queue \t status`), built from the records
-- already stored; from here on every script keeps them. One pass over the state
-- column, during which Redis serves nothing else (about a second per million jobs).
-- ARGV[1] tag `{prefix}`.
local tag = ARGV[1]
local counts = {}
local cursor = '0'
repeat
  local page = redis.call('HSCAN', tag .. ':state', cursor, 'COUNT', 1000)
  cursor = page[1]
  local ids, states = {}, {}
  for i = 1, #page[2], 2 do
    ids[#ids + 1] = page[2][i]
    states[#states + 1] = page[2][i + 1]
  end
  if #ids > 0 then
    local specs = redis.call('HMGET', tag .. ':spec', unpack(ids))
    for i = 1, #ids do
      if specs[i] then
        local tenant, queue = string.match(specs[i], '^([^\t]*)\t[^\t]*\t([^\t]*)')
        local key = tenant .. '\t' .. queue .. '\t' .. string.match(states[i], '^(%a+)')
        counts[key] = (counts[key] or 0) + 1
      end
    end
  end
until cursor == '0'
for key, n in pairs(counts) do
  local tenant, field = string.match(key, '^([^\t]*)\t(.*)$')
  redis.call('HSET', tag .. ':t:' .. tenant .. ':counts', field, n)
end
