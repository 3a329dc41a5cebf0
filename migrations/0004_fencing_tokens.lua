-- 0004_fencing_tokens: from this schema on, a job's state header also carries
-- `runs` (its claims so far: each claim's fencing token), `flags` (`l` while its
-- id is on its ready list, `o` while its latest run's outcome is accepted),
-- `lost` (runs the reaper did not count) and `total` (transitions recorded; the
-- history keeps the last 50). Headers of schema 3 need no rewrite: the scripts
-- read them as a run of `attempts` and write schema 4 at the next transition,
-- so this pass is over the leases only. Binaries of schema 3 would misread the
-- longer headers: they refuse to start against this schema.
-- A lease now says whether a worker confirmed its claim (`<expiry> \t <worker>`);
-- the leases held at the upgrade are marked confirmed by `schema-3`, so the
-- reaper counts them as it did before.
-- ARGV[1] tag `{prefix}`.
local tag = ARGV[1]
for _, queue in ipairs(redis.call('SMEMBERS', tag .. ':queues')) do
  local key = tag .. ':q:' .. queue .. ':running'
  local leases = redis.call('HGETALL', key)
  for i = 1, #leases, 2 do
    if leases[i] ~= '~' and not string.find(leases[i + 1], '\t', 1, true) then
      redis.call('HSET', key, leases[i], leases[i + 1] .. '\tschema-3')
    end
  end
end
