-- KEYS: session. ARGV: now, wanted idle deadline. Extends a live session; never recreates one.
local f = redis.call('HMGET', KEYS[1], 'idle', 'exp')
if not f[1] then return 0 end
local now = tonumber(ARGV[1])
local exp = tonumber(f[2])
if tonumber(f[1]) <= now or exp <= now then return 0 end
local idle = math.min(tonumber(ARGV[2]), exp)
redis.call('HSET', KEYS[1], 'seen', ARGV[1], 'idle', string.format('%.0f', idle))
redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', idle))
return 1
