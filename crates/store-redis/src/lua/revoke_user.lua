-- KEYS: index, [bus sequence]. ARGV: session key prefix, sid to keep (or ''), uid, now. Deletes
-- every other session of the user and announces it; returns pairs sid, token hash.
local out = {}
revoke_all_but(KEYS[1], ARGV[1], ARGV[2], out)
if #out > 0 then announce(KEYS[2], ARGV[3], ARGV[4]) end
return out
