-- KEYS: index. ARGV: session key prefix, now. Deletes sessions dead at `now` and index entries
-- whose session is gone; returns pairs sid, token hash of the deleted.
local now = tonumber(ARGV[2])
local out = {}
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local f = redis.call('HMGET', ARGV[1] .. m, 'idle', 'exp', 'th')
  if not f[1] then
    redis.call('ZREM', KEYS[1], m)
  elseif tonumber(f[1]) <= now or tonumber(f[2]) <= now then
    redis.call('DEL', ARGV[1] .. m)
    redis.call('ZREM', KEYS[1], m)
    table.insert(out, m); table.insert(out, f[3])
  end
end
return out
