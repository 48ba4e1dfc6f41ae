-- Fenced claim of every other consumer's pending entries (a previous owner's) to the caller.
-- KEYS[1] stream, KEYS[2] epoch key
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] epoch, ARGV[4] cursor, ARGV[5] count
-- Returns {next cursor, number claimed, number of deleted ids dropped from the PEL}.
local cur = redis.call('GET', KEYS[2])
if cur ~= ARGV[3] then
  return redis.error_reply('FENCED epoch is ' .. tostring(cur) .. ', caller has ' .. ARGV[3])
end
local r = redis.pcall('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[4], 'COUNT', ARGV[5],
                      'JUSTID')
if type(r) == 'table' and r.err then
  return redis.error_reply(r.err)
end
local deleted = 0
if r[3] then deleted = #r[3] end
return {r[1], #r[2], deleted}
