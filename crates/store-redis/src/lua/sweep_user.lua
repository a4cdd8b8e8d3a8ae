-- KEYS: index. ARGV: session key prefix, now. Deletes sessions dead at `now` and index entries
-- whose session is gone; returns pairs sid, token hash of the deleted.
local out = {}
prune(KEYS[1], ARGV[1], tonumber(ARGV[2]), out)
return out
