-- KEYS: user. ARGV: old hash, new hash. Compare-and-set.
if redis.call('HGET', KEYS[1], 'pw') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'pw', ARGV[2])
  return 1
end
return 0
