-- Shared by the scripts that import records copied from another store; prepended to each.

-- Whether hash `key` holds exactly the field, value pairs of the flat list `want`.
local function holds(key, want)
  local have = redis.call('HGETALL', key)
  if #have ~= #want then return false end
  local h = {}
  for i = 1, #have, 2 do h[have[i]] = have[i + 1] end
  for i = 1, #want, 2 do
    if h[want[i]] ~= want[i + 1] then return false end
  end
  return true
end

-- Makes hash `key` hold exactly the field, value pairs of `want` (fields it had and `want`
-- lacks, such as a password removed, go).
local function replace(key, want)
  redis.call('DEL', key)
  redis.call('HSET', key, unpack(want))
end

-- ARGV from `first` on, as a list.
local function rest(first)
  local out = {}
  for i = first, #ARGV do out[#out + 1] = ARGV[i] end
  return out
end
