-- Compare-and-set renew: only the holder of this epoch may extend the lease.
-- KEYS[1] lease key, KEYS[2] epoch key; ARGV[1] holder, ARGV[2] epoch, ARGV[3] ttl ms
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
