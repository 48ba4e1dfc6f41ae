-- Drop index entries whose dead letter is gone (trimmed by an older version's MAXLEN ~, or an
-- operator's XTRIM/XDEL), one HSCAN step at a time; atomic per step, safe to run anywhere.
-- KEYS[1] dead-letter stream, KEYS[2] dead-letter index
-- ARGV[1] HSCAN cursor ('0' to start), ARGV[2] HSCAN COUNT
-- Returns {next cursor ('0' when done), index entries removed}. A first step finds nothing to
-- do when the index is no larger than the stream (every move writes one of each).
if ARGV[1] == '0' and redis.call('HLEN', KEYS[2]) <= redis.call('XLEN', KEYS[1]) then
  return {'0', 0}
end
local r = redis.call('HSCAN', KEYS[2], ARGV[1], 'COUNT', ARGV[2])
local flat = r[2]
local removed = 0
for i = 1, #flat, 2 do
  local id = flat[i + 1]
  if #redis.call('XRANGE', KEYS[1], id, id) == 0 then
    redis.call('HDEL', KEYS[2], flat[i])
    removed = removed + 1
  end
end
return {r[1], removed}
