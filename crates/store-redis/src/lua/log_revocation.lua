-- KEYS: the revocation log (sorted set by time), the latest log entry per user (hash; same slot).
-- ARGV: 'kind|subject', at (ms), until (ms), horizon (ms). Appends a revocation and forgets those
-- older than any grant can live. A user's revocations are coalesced: their entry is replaced by
-- one with the latest `at` and `until` (a later user revocation covers every earlier one), so a
-- user who revokes a thousand times a minute leaves one entry, not a thousand, for every
-- verifier to read on connect.
local field = ARGV[1]
local at, untl = tonumber(ARGV[2]), tonumber(ARGV[3])
local user = string.sub(field, 1, 5) == 'user|'
if user then
  local prev = redis.call('HGET', KEYS[2], field)
  if prev then
    redis.call('ZREM', KEYS[1], prev)
    local pat, puntil = string.match(prev, '|(%d+)|(%d+)$')
    if pat and tonumber(pat) > at then at = tonumber(pat) end
    if puntil and tonumber(puntil) > untl then untl = tonumber(puntil) end
  end
end
local member = field .. '|' .. string.format('%d', at) .. '|' .. string.format('%d', untl)
redis.call('ZADD', KEYS[1], at, member)
if user then redis.call('HSET', KEYS[2], field, member) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])
return 1
