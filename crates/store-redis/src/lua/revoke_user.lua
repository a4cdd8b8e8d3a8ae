-- KEYS: index. ARGV: session key prefix, sid to keep (or ''). Deletes every other session of the
-- user; returns pairs sid, token hash.
local out = {}
revoke_all_but(KEYS[1], ARGV[1], ARGV[2], out)
return out
