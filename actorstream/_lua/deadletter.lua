-- Fenced, atomic, idempotent move of one entry to the dead-letter stream.
-- KEYS[1] stream, KEYS[2] epoch key, KEYS[3] dead-letter stream, KEYS[4] dead-letter index
-- ARGV[1] group, ARGV[2] epoch, ARGV[3] entry id, ARGV[4] maxlen of the dead-letter stream
-- (0 = unbounded), ARGV[5..] field/value pairs of the dead-letter entry.
-- Returns the dead-letter entry id (the existing one when this id was already moved).
local cur = redis.call('GET', KEYS[2])
if cur ~= ARGV[2] then
  return redis.error_reply('FENCED epoch is ' .. tostring(cur) .. ', caller has ' .. ARGV[2])
end
local tag = ARGV[1] .. ' ' .. ARGV[3]
local existing = redis.call('HGET', KEYS[4], tag)
if existing then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
  return existing
end
local id
if ARGV[4] ~= '0' then
  id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', unpack(ARGV, 5))
else
  id = redis.call('XADD', KEYS[3], '*', unpack(ARGV, 5))
end
redis.call('HSET', KEYS[4], tag, id)
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
return id
