-- Fenced "ack the previous batch, then read the next one" in one round trip.
-- KEYS[1] stream, KEYS[2] epoch key
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] epoch, ARGV[4] count,
-- ARGV[5] '>' for new entries or an id to re-read our own pending entries after it,
-- ARGV[6..] ids to XACK first.
-- Returns {entries or false, pending details or false, last entry id or false}.
local cur = redis.call('GET', KEYS[2])
if cur ~= ARGV[3] then
  return redis.error_reply('FENCED epoch is ' .. tostring(cur) .. ', caller has ' .. ARGV[3])
end
if #ARGV > 5 then
  redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 6))
end
if ARGV[4] == '0' then
  return {false, false, false}
end
local r = redis.pcall('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[4],
                      'STREAMS', KEYS[1], ARGV[5])
if type(r) == 'table' and r.err then
  return redis.error_reply(r.err)
end
local entries = false
if r then entries = r[1][2] end
local pending = false
if ARGV[5] ~= '>' and entries and #entries > 0 then
  pending = redis.call('XPENDING', KEYS[1], ARGV[1], entries[1][1], '+', ARGV[4], ARGV[2])
end
local last = false
if not entries or #entries == 0 then
  local tail = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if #tail > 0 then last = tail[1][1] else last = '0-0' end
end
return {entries, pending, last}
