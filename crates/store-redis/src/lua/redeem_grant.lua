-- KEYS: the grant's use marker, the grant's revocation marker (one slot: the grant id is the hash
-- tag). ARGV: expiry (ms). Returns 'used', 'revoked', or 'ok' after recording the use until the
-- grant expires. (The user-wide revocation lives in the user's slot and is checked right after.)
if redis.call('EXISTS', KEYS[1]) == 1 then return 'used' end
if redis.call('EXISTS', KEYS[2]) == 1 then return 'revoked' end
redis.call('SET', KEYS[1], '1', 'PXAT', ARGV[1])
return 'ok'
