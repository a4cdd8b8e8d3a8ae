-- KEYS: user, index. ARGV: session key prefix, disabled '1'/'0', then the user's fields as field,
-- value pairs. Writes the user as a copy from another store has it, unless the hash already is
-- so; a disabled user loses its sessions in the same step (a disabled user has none). Returns
-- {1 when written, else 0; pairs sid, token hash of the sessions removed}.
local want = rest(3)
local written = 0
if not holds(KEYS[1], want) then
  replace(KEYS[1], want)
  written = 1
end
local out = {}
if ARGV[2] == '1' then revoke_all_but(KEYS[2], ARGV[1], '', out) end
return {written, out}
