-- KEYS: log. ARGV: now, window ms, max, unique member, enforce '1'/'0'. Sliding-window log in a
-- sorted set scored by time. Forgets what left the window; then, when enforcing and the log holds
-- `max` events, records nothing and returns {0, time of the event that must leave first};
-- otherwise records the member, keeps the newest `max`, expires with the window, returns {1, 0}.
-- Bounded: the log never holds more than `max` members after a call.
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local max = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local n = redis.call('ZCARD', KEYS[1])
if ARGV[5] == '1' and n >= max then
  if max == 0 then return {0, now} end
  local first = redis.call('ZRANGE', KEYS[1], n - max, n - max, 'WITHSCORES')
  return {0, tonumber(first[2])}
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
local excess = n + 1 - max
if excess > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, excess - 1) end
redis.call('PEXPIRE', KEYS[1], window)
return {1, 0}
