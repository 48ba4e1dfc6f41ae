-- Create the consumer group at the start of the stream the first time; refuse to recreate it
-- if it existed before and has vanished (an operator ran XGROUP DESTROY, or Redis lost data):
-- recreating at '$' would skip events, at '0' would replay everything. A human decides.
-- KEYS[1] stream, KEYS[2] partition meta hash; ARGV[1] group
-- Returns 'created', 'exists', or an error 'GROUPLOST ...'.
local groups = {}
if redis.call('EXISTS', KEYS[1]) == 1 then
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    for i = 1, #g, 2 do
      if g[i] == 'name' then groups[g[i + 1]] = true end
    end
  end
end
if groups[ARGV[1]] then
  -- Write only when missing: under maxmemory (OOM) a write is refused, and a restarting
  -- partition must still be able to start (reads and acks work under OOM).
  if redis.call('HEXISTS', KEYS[2], 'group:' .. ARGV[1]) == 0 then
    redis.call('HSET', KEYS[2], 'group:' .. ARGV[1], '1')
  end
  return 'exists'
end
if redis.call('HEXISTS', KEYS[2], 'group:' .. ARGV[1]) == 1 then
  return redis.error_reply('GROUPLOST consumer group ' .. ARGV[1] .. ' of ' .. KEYS[1] ..
    ' existed and has vanished; recreate it at the id you choose (XGROUP CREATE) to resume')
end
redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
redis.call('HSET', KEYS[2], 'group:' .. ARGV[1], '1')
return 'created'
