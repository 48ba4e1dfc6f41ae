-- Compare-and-set release: only the holder of this epoch may drop the lease.
-- KEYS[1] lease key, KEYS[2] epoch key; ARGV[1] holder, ARGV[2] epoch
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
