-- KEYS: the user's grant-revocation time. ARGV: at (ms), until (ms). Keeps the latest `at` and the
-- latest `until`, so a revocation never shortens an earlier one.
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local at = tonumber(ARGV[1])
local ttl = redis.call('PEXPIRETIME', KEYS[1])
local untl = tonumber(ARGV[2])
if ttl > untl then untl = ttl end
if at > cur then cur = at end
redis.call('SET', KEYS[1], string.format('%d', cur), 'PXAT', untl)
return 1
