-- Safe retention: trim only entries that every consumer group has acknowledged.
-- KEYS[1] stream; ARGV[1] policy min id to keep ('' for none), ARGV[2] maxlen (0 for none)
-- Entries below the lowest "still needed" position of all groups are candidates: a group needs
-- its oldest pending entry, and everything after its last-delivered id. Without groups nothing
-- has been consumed, so nothing is trimmed. Returns {trimmed count, threshold id or reason}.
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  if am ~= bm then return am < bm end
  return as < bs
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 'no-stream'} end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return {0, 'no-groups'} end
local safe = nil
for _, g in ipairs(groups) do
  local name, pending, last
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1]
    elseif g[i] == 'pending' then pending = g[i + 1]
    elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
  end
  local needed
  if pending > 0 then
    needed = redis.call('XPENDING', KEYS[1], name)[2]
  else
    local ms, seq = parse(last)
    needed = string.format('%d-%d', ms, seq + 1)
  end
  if safe == nil or less(needed, safe) then safe = needed end
end
local threshold = nil
if ARGV[1] ~= '' then threshold = ARGV[1] end
local maxlen = tonumber(ARGV[2])
if maxlen > 0 and redis.call('XLEN', KEYS[1]) > maxlen then
  local tail = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', maxlen)
  local oldest_kept = tail[#tail][1]
  if threshold == nil or less(threshold, oldest_kept) then threshold = oldest_kept end
end
if threshold == nil then return {0, 'no-policy'} end
if less(safe, threshold) then threshold = safe end
local n = redis.call('XTRIM', KEYS[1], 'MINID', threshold)
return {n, threshold}
