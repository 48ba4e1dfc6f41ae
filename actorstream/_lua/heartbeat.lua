-- Membership heartbeat on the server's clock (a worker's clock step cannot matter).
-- KEYS[1] members zset, KEYS[2] this worker's info hash, KEYS[3] the app's incarnation token
-- ARGV[1] worker id, ARGV[2] member timeout ms, ARGV[3] 'leave' or 'beat',
-- ARGV[4] a token to become the incarnation if there is none, ARGV[5..] info pairs
-- Returns {live members (sorted), members that expired just now (missed their heartbeats),
-- the incarnation token (set once, never expiring: a new one means Redis lost the app's data)}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[3] == 'leave' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('DEL', KEYS[2])
else
  redis.call('SET', KEYS[3], ARGV[4], 'NX')
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  if #ARGV > 4 then
    redis.call('HSET', KEYS[2], unpack(ARGV, 5))
  end
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
end
return {redis.call('ZRANGE', KEYS[1], 0, -1), expired, redis.call('GET', KEYS[3])}
