-- KEYS: index. ARGV: session key prefix, sid to keep (or ''). Deletes every other session of the
-- user; returns pairs sid, token hash.
local out = {}
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if m ~= ARGV[2] then
    local th = redis.call('HGET', ARGV[1] .. m, 'th')
    redis.call('ZREM', KEYS[1], m)
    if th then
      redis.call('DEL', ARGV[1] .. m)
      table.insert(out, m); table.insert(out, th)
    end
  end
end
return out
