-- Acquire a lease if it is free (or already ours); a new holder increments the epoch.
-- KEYS[1] lease key, KEYS[2] epoch key; ARGV[1] holder id, ARGV[2] ttl ms,
-- ARGV[3] (optional) the highest epoch the caller has ever seen for this lease.
-- Returns {epoch, holder}: epoch 0 when someone else holds it. When the epoch key went back
-- below what the caller has seen (Redis lost data: a failover or a restart without persistence),
-- the new epoch is raised above it, so stale holders stay fenced, and a third element
-- 'regressed' is returned for the caller to report.
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
local floor = tonumber(ARGV[3] or '0') or 0
local regressed = false
if holder ~= ARGV[1] and epoch <= floor then
  epoch = floor + 1
  redis.call('SET', KEYS[2], epoch)
  regressed = true
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if regressed then
  return {epoch, ARGV[1], 'regressed'}
end
return {epoch, ARGV[1]}
