-- KEYS: session, index. ARGV: sid. Deletes the session; returns its token hash, or nil.
local th = redis.call('HGET', KEYS[1], 'th')
redis.call('ZREM', KEYS[2], ARGV[1])
if not th then return false end
redis.call('DEL', KEYS[1])
return th
