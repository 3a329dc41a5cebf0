-- 0003_short_event_lines: from this schema on, an events-stream line that
-- repeats the line before it carries the job id alone, which binaries of
-- schema 2 cannot read (they skip such lines); they refuse to start against
-- this schema. Also pins every queue's leases hash (`q:<queue>:running`) as a
-- hash table, as CLAIM does from now on: field `~`, an expiry of 80 nines that
-- never comes, whose length keeps Redis from storing the hash as a listpack.
-- ARGV[1] tag `{prefix}`.
local tag = ARGV[1]
for _, queue in ipairs(redis.call('SMEMBERS', tag .. ':queues')) do
  redis.call('HSET', tag .. ':q:' .. queue .. ':running', '~', string.rep('9', 80))
end
