-- 0001_init: the initial schema.
-- ARGV[1] tag `{prefix}`.
-- Every queue list, zset and record key is created on first use by the scripts
-- in shared/src/scripts; this migration registers the `default` queue so that
-- it shows in /v1/queues before its first job.
local tag = ARGV[1]
redis.call('SADD', tag .. ':queues', 'default')
