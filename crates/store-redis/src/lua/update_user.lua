-- KEYS: user, index. ARGV: password hash or '', roles JSON or '', disabled '0'/'1' or '', now,
-- revoke '1'/'0', sid to keep or '', session key prefix. Returns {user fields, revoked pairs}.
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('NOUSER') end
if ARGV[1] ~= '' then redis.call('HSET', KEYS[1], 'pw', ARGV[1]) end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], 'roles') ~= ARGV[2] then
  redis.call('HSET', KEYS[1], 'roles', ARGV[2], 'priv', ARGV[4])
end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'disabled', ARGV[3]) end
redis.call('HSET', KEYS[1], 'updated', ARGV[4])
local out = {}
if ARGV[5] == '1' then
  for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    if m ~= ARGV[6] then
      local th = redis.call('HGET', ARGV[7] .. m, 'th')
      redis.call('ZREM', KEYS[2], m)
      if th then
        redis.call('DEL', ARGV[7] .. m)
        table.insert(out, m); table.insert(out, th)
      end
    end
  end
end
return {redis.call('HGETALL', KEYS[1]), out}
