-- Dead-letter retention: trim a partition's dead-letter stream to its newest ARGV[1] entries,
-- dropping the index entry of every removed one (MAXLEN trimming left them behind), atomically.
-- KEYS[1] dead-letter stream, KEYS[2] dead-letter index
-- ARGV[1] entries to keep, ARGV[2] at most this many removed per call (call again while equal)
-- Returns the number of dead-letter entries removed.
local excess = redis.call('XLEN', KEYS[1]) - tonumber(ARGV[1])
if excess <= 0 then
  return 0
end
if excess > tonumber(ARGV[2]) then
  excess = tonumber(ARGV[2])
end
local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', excess)
for _, entry in ipairs(oldest) do
  local flat = entry[2]
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
    if redis.call('HGET', KEYS[2], tag) == entry[1] then
      redis.call('HDEL', KEYS[2], tag)
    end
  end
  redis.call('XDEL', KEYS[1], entry[1])
end
return #oldest
