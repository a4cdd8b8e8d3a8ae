-- KEYS: log. ARGV: now, window ms, max, unique member. Sliding-window log in a sorted set scored
-- by time: records the event, forgets what left the window and all but the newest `max`, expires
-- with the window. Returns the remaining times, oldest first.
local now = tonumber(ARGV[1])
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[3])
if excess > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, excess - 1) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local out = {}
local all = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 2, #all, 2 do table.insert(out, all[i]) end
return out
