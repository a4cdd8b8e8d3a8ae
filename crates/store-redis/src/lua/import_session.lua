-- KEYS: user, index, session. ARGV: idle deadline, absolute deadline, created (the index score),
-- sid, then the session's fields as field, value pairs. Writes the session as a copy from another
-- store has it, unless its hash already is so; never for a user that is missing or disabled (the
-- caller skips sessions dead by its clock). Returns {outcome, the token hash it had or ''}, the
-- outcome 'nouser', 'disabled', 'same' or 'written'.
if redis.call('EXISTS', KEYS[1]) == 0 then return {'nouser', ''} end
if redis.call('HGET', KEYS[1], 'disabled') == '1' then return {'disabled', ''} end
local want = rest(5)
local old = redis.call('HGET', KEYS[3], 'th') or ''
if holds(KEYS[3], want) then return {'same', old} end
replace(KEYS[3], want)
redis.call('PEXPIREAT', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
if redis.call('PEXPIRETIME', KEYS[2]) < tonumber(ARGV[2]) then
  redis.call('PEXPIREAT', KEYS[2], ARGV[2])
end
return {'written', old}
