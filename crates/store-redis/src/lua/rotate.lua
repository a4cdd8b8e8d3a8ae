-- KEYS: session, [bus sequence]. ARGV: from token hash, to token hash, csrf, now, uid.
-- Compare-and-set on the token hash of a live session; announces it. Returns its absolute
-- deadline, or nil.
local f = redis.call('HMGET', KEYS[1], 'th', 'idle', 'exp')
if not f[1] or f[1] ~= ARGV[1] then return false end
local now = tonumber(ARGV[4])
if tonumber(f[2]) <= now or tonumber(f[3]) <= now then return false end
redis.call('HSET', KEYS[1], 'th', ARGV[2], 'csrf', ARGV[3], 'issued', ARGV[4])
announce(KEYS[2], ARGV[5], ARGV[4])
return f[3]
