-- KEYS: user, index, session, [bus sequence]. ARGV: sid, token hash, csrf, created, idle, exp, ip, ua, data, cap,
-- now, session key prefix, has ip, has ua, uid, audience ('' for none), horizon (ms: no session
-- created before it can be live). Makes room under the cap with bounded work (`make_room`),
-- announcing any eviction, and inserts the session. Returns {evicted pairs, pruned pairs}: sid, th.
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('NOUSER') end
if redis.call('EXISTS', KEYS[3]) == 1 then return redis.error_reply('CONFLICT') end
local now = tonumber(ARGV[11])
local prefix = ARGV[12]
local evicted, pruned = {}, {}
make_room(KEYS[2], prefix, now, tonumber(ARGV[17]), tonumber(ARGV[10]), pruned, evicted)
redis.call('HSET', KEYS[3], 'id', ARGV[1], 'uid', ARGV[15], 'th', ARGV[2], 'csrf', ARGV[3],
  'created', ARGV[4], 'seen', ARGV[4], 'issued', ARGV[4], 'idle', ARGV[5], 'exp', ARGV[6],
  'data', ARGV[9], 'dv', 1)
if ARGV[13] == '1' then redis.call('HSET', KEYS[3], 'ip', ARGV[7]) end
if ARGV[14] == '1' then redis.call('HSET', KEYS[3], 'ua', ARGV[8]) end
if ARGV[16] ~= '' then redis.call('HSET', KEYS[3], 'aud', ARGV[16]) end
redis.call('PEXPIREAT', KEYS[3], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
if redis.call('PEXPIRETIME', KEYS[2]) < tonumber(ARGV[6]) then
  redis.call('PEXPIREAT', KEYS[2], ARGV[6])
end
if #evicted > 0 then announce(KEYS[4], ARGV[15], ARGV[11]) end
return {evicted, pruned}
