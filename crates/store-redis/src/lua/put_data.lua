-- KEYS: session. ARGV: data JSON, expected version or ''. Compare-and-set; never recreates.
local dv = redis.call('HGET', KEYS[1], 'dv')
if not dv then return {'gone', 0} end
if ARGV[2] ~= '' and ARGV[2] ~= dv then return {'mismatch', tonumber(dv)} end
local n = redis.call('HINCRBY', KEYS[1], 'dv', 1)
redis.call('HSET', KEYS[1], 'data', ARGV[1])
return {'ok', n}
