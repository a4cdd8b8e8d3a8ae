-- KEYS: session, index, [bus sequence]. ARGV: sid, uid, now. Deletes the session and announces
-- it; returns its token hash, or nil.
local th = redis.call('HGET', KEYS[1], 'th')
redis.call('ZREM', KEYS[2], ARGV[1])
if not th then return false end
redis.call('DEL', KEYS[1])
announce(KEYS[3], ARGV[2], ARGV[3])
return th
