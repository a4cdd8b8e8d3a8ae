-- Shared by the scripts that change sessions; prepended to each when it is built.

-- Announces on the bus that user `uid`'s cached sessions are stale, in the same atomic step as
-- the change: a committed change is never left unannounced. With a sequence key (one Redis; a
-- Cluster has no key every script can reach) the message carries the next change number, so a
-- subscriber that sees a gap knows it missed one and stops trusting its cache.
local function announce(seqkey, uid, at)
  local seq = ''
  if seqkey then seq = redis.call('INCR', seqkey) end
  redis.call('PUBLISH', 'cr:bus', uid .. ' ' .. at .. ' ' .. seq)
end

-- Deletes session `m` and its index entry, appending `m, th` to `out`.
local function drop(index, prefix, m, th, out)
  redis.call('DEL', prefix .. m)
  redis.call('ZREM', index, m)
  table.insert(out, m); table.insert(out, th)
end

-- Walks the index: entries whose session is gone leave it, sessions dead at `now` are deleted
-- (appended to `pruned`). Returns the live members, oldest first.
local function prune(index, prefix, now, pruned)
  local live = {}
  for _, m in ipairs(redis.call('ZRANGE', index, 0, -1)) do
    local f = redis.call('HMGET', prefix .. m, 'idle', 'exp', 'th')
    if not f[1] then
      redis.call('ZREM', index, m)
    elseif tonumber(f[1]) <= now or tonumber(f[2]) <= now then
      drop(index, prefix, m, f[3], pruned)
    else
      table.insert(live, m)
    end
  end
  return live
end

-- Makes room for one more session under `cap` (0: no cap) looking at a bounded number of the
-- oldest index entries (`cap` + 32, or 16 without a cap), never the whole index: a user who piles
-- up sessions cannot make each login walk them all. Entries older than any session can live
-- (`horizon`) leave the index by score; of those looked at, entries whose session is gone leave
-- it, dead sessions are deleted (appended to `pruned`), and while the index still holds `cap`
-- or more, the oldest live sessions are evicted (appended to `evicted`). Entries not looked at
-- count as live, so the cap is never exceeded (at worst a session goes a little early when many
-- dead entries sit behind the ones looked at; each call clears some).
local function make_room(index, prefix, now, horizon, cap, pruned, evicted)
  redis.call('ZREMRANGEBYSCORE', index, '-inf', horizon)
  local n = redis.call('ZCARD', index)
  local budget = 16
  if cap > 0 then budget = cap + 32 end
  for _, m in ipairs(redis.call('ZRANGE', index, 0, budget - 1)) do
    local f = redis.call('HMGET', prefix .. m, 'idle', 'exp', 'th')
    if not f[1] then
      redis.call('ZREM', index, m)
      n = n - 1
    elseif tonumber(f[1]) <= now or tonumber(f[2]) <= now then
      drop(index, prefix, m, f[3], pruned)
      n = n - 1
    elseif cap > 0 and n >= cap then
      drop(index, prefix, m, f[3], evicted)
      n = n - 1
    elseif cap > 0 then
      break
    end
  end
end

-- Deletes every session of the index but `keep` (or all, with ''), appending pairs to `out`.
local function revoke_all_but(index, prefix, keep, out)
  for _, m in ipairs(redis.call('ZRANGE', index, 0, -1)) do
    if m ~= keep then
      local th = redis.call('HGET', prefix .. m, 'th')
      if th then
        drop(index, prefix, m, th, out)
      else
        redis.call('ZREM', index, m)
      end
    end
  end
end

