-- Purge dead letters of one partition, with their index entries, atomically.
-- KEYS[1] dead-letter stream, KEYS[2] dead-letter index
-- ARGV[1] '*' deletes both keys (everything, including index entries left behind by MAXLEN
-- trimming); else ARGV[1..] are dead-letter entry ids.
-- Returns the number of dead-letter entries deleted.
if ARGV[1] == '*' then
  local n = redis.call('XLEN', KEYS[1])
  redis.call('DEL', KEYS[1], KEYS[2])
  return n
end
local deleted = 0
for i = 1, #ARGV do
  local found = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
  if #found > 0 then
    local flat = found[1][2]
    local actor, original
    for j = 1, #flat, 2 do
      if flat[j] == 'actor' then
        actor = flat[j + 1]
      elseif flat[j] == 'id' then
        original = flat[j + 1]
      end
    end
    if actor and original then
      local tag = actor .. ' ' .. original
      if redis.call('HGET', KEYS[2], tag) == ARGV[i] then
        redis.call('HDEL', KEYS[2], tag)
      end
    end
    deleted = deleted + redis.call('XDEL', KEYS[1], ARGV[i])
  end
end
return deleted
