-- KEYS: user, index, [bus sequence]. ARGV: password hash or '', roles JSON or '', disabled
-- '0'/'1' or '', now, revoke '1'/'0', sid to keep or '', session key prefix, uid. Announces the
-- change. Returns {user fields, revoked pairs}.
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('NOUSER') end
if ARGV[1] ~= '' then redis.call('HSET', KEYS[1], 'pw', ARGV[1]) end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], 'roles') ~= ARGV[2] then
  redis.call('HSET', KEYS[1], 'roles', ARGV[2], 'priv', ARGV[4])
end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'disabled', ARGV[3]) end
redis.call('HSET', KEYS[1], 'updated', ARGV[4])
local out = {}
if ARGV[5] == '1' then revoke_all_but(KEYS[2], ARGV[7], ARGV[6], out) end
announce(KEYS[3], ARGV[8], ARGV[4])
return {redis.call('HGETALL', KEYS[1]), out}
