-- KEYS: user, index, session. ARGV: sid, token hash, csrf, created, idle, exp, ip, ua, data, cap,
-- now, session key prefix, has ip, has ua, uid.
-- Prunes the index (members whose session is gone or dead at `now` are deleted), evicts the oldest
-- live sessions beyond cap - 1, inserts the session. Returns {evicted pairs, pruned pairs}: sid, th.
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('NOUSER') end
if redis.call('EXISTS', KEYS[3]) == 1 then return redis.error_reply('CONFLICT') end
local now = tonumber(ARGV[11])
local prefix = ARGV[12]
local live, evicted, pruned = {}, {}, {}
for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local f = redis.call('HMGET', prefix .. m, 'idle', 'exp', 'th')
  if not f[1] then
    redis.call('ZREM', KEYS[2], m)
  elseif tonumber(f[1]) <= now or tonumber(f[2]) <= now then
    redis.call('DEL', prefix .. m)
    redis.call('ZREM', KEYS[2], m)
    table.insert(pruned, m); table.insert(pruned, f[3])
  else
    table.insert(live, m)
  end
end
local cap = tonumber(ARGV[10])
if cap > 0 then
  local excess = #live - (cap - 1)
  local i = 1
  while excess > 0 do
    local m = live[i]
    local th = redis.call('HGET', prefix .. m, 'th')
    redis.call('DEL', prefix .. m)
    redis.call('ZREM', KEYS[2], m)
    table.insert(evicted, m); table.insert(evicted, th)
    i = i + 1
    excess = excess - 1
  end
end
redis.call('HSET', KEYS[3], 'id', ARGV[1], 'uid', ARGV[15], 'th', ARGV[2], 'csrf', ARGV[3],
  'created', ARGV[4], 'seen', ARGV[4], 'issued', ARGV[4], 'idle', ARGV[5], 'exp', ARGV[6],
  'data', ARGV[9], 'dv', 1)
if ARGV[13] == '1' then redis.call('HSET', KEYS[3], 'ip', ARGV[7]) end
if ARGV[14] == '1' then redis.call('HSET', KEYS[3], 'ua', ARGV[8]) end
redis.call('PEXPIREAT', KEYS[3], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
if redis.call('PEXPIRETIME', KEYS[2]) < tonumber(ARGV[6]) then
  redis.call('PEXPIREAT', KEYS[2], ARGV[6])
end
return {evicted, pruned}
