-- KEYS: an audit stream, the ids of its events (a sorted set by when they were added; the same
-- slot: its name is the stream's in braces). ARGV: event id, stream length kept, now, then the
-- event's fields as field, value pairs. Appends the event unless the stream already has one with
-- this id (a second copy from another store adds nothing), and keeps the ids of somewhat more
-- than the stream keeps (XADD MAXLEN ~ trims to about that many). Returns 1 when appended, else 0.
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'ref', ARGV[1], unpack(rest(4)))
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[2]) - 10000
if excess > 0 then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, excess - 1) end
return 1
