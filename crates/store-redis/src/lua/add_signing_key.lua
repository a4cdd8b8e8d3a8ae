-- KEYS: the signing-key hash. ARGV: id, record ("created|active_from|retired_at or -|public|sealed"),
-- retire others at (ms, or '' for none). Adds the key; with a retirement time, every other key not
-- yet retired gets it, in the same step (a rotation).
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return redis.error_reply('CONFLICT') end
if ARGV[3] ~= '' then
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    local created, active, retired, rest = string.match(all[i + 1], '^([^|]*)|([^|]*)|([^|]*)|(.*)$')
    if retired == '-' then
      redis.call('HSET', KEYS[1], all[i], created .. '|' .. active .. '|' .. ARGV[3] .. '|' .. rest)
    end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
