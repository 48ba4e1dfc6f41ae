-- Replay dead letters of one partition: each entry's original fields, untouched, are appended
-- to the partition's own stream (a new id, read by every group as a new event), the entry is
-- removed from the dead-letter stream and its index entry dropped, in one atomic step.
-- Idempotent: an id that is no longer in the dead-letter stream (already replayed or purged)
-- is skipped, so a retried replay never sends an event twice.
-- KEYS[1] dead-letter stream, KEYS[2] dead-letter index, KEYS[3] the partition's stream
-- ARGV[1..] dead-letter entry ids
-- Returns, per id: the new entry id, 0 when the entry was gone, -1 when it held no original
-- fields (left in place).
local out = {}
for i = 1, #ARGV do
  local found = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
  local result = 0
  if #found > 0 then
    local flat = found[1][2]
    local fields = {}
    local actor, original
    for j = 1, #flat, 2 do
      local name = flat[j]
      if string.sub(name, 1, 2) == 'o.' then
        fields[#fields + 1] = string.sub(name, 3)
        fields[#fields + 1] = flat[j + 1]
      elseif name == 'actor' then
        actor = flat[j + 1]
      elseif name == 'id' then
        original = flat[j + 1]
      end
    end
    if #fields == 0 then
      result = -1
    else
      result = redis.call('XADD', KEYS[3], '*', unpack(fields))
      if actor and original then
        local tag = actor .. ' ' .. original
        if redis.call('HGET', KEYS[2], tag) == ARGV[i] then
          redis.call('HDEL', KEYS[2], tag)
        end
      end
      redis.call('XDEL', KEYS[1], ARGV[i])
    end
  end
  out[i] = result
end
return out
