-- Acquire a lease if it is free (or already ours); a new holder increments the epoch.
-- KEYS[1] lease key, KEYS[2] epoch key; ARGV[1] holder id, ARGV[2] ttl ms
-- Returns {epoch, holder}: epoch 0 when someone else holds it.
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return {0, holder}
end
local epoch
if holder == ARGV[1] then
  epoch = tonumber(redis.call('GET', KEYS[2]) or '0')
  if epoch == 0 then epoch = redis.call('INCR', KEYS[2]) end
else
  epoch = redis.call('INCR', KEYS[2])
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {epoch, ARGV[1]}
