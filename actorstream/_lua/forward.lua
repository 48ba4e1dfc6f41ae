-- Idempotent, fenced forward of outbox entries to one target stream (exactly-once on a Cluster).
-- KEYS[1] target stream, KEYS[2] its forward marks (hash: source -> "<epoch> <last outbox id>")
-- ARGV[1] source (stream:partition:actor), ARGV[2] the caller's epoch of that partition,
-- then per entry, in outbox order: outbox id, n, n field/value arguments.
-- An entry at or below the source's mark was appended already (a retried forward): skipped.
-- A mark at a later epoch: a newer owner forwards now, the caller is refused (FENCED).
-- Returns {appended, skipped}.
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local epoch = tonumber(ARGV[2])
local mark = redis.call('HGET', KEYS[2], ARGV[1])
local mark_epoch, last = 0, '0-0'
if mark then
  local e, id = string.match(mark, '^(%d+) (%S+)$')
  mark_epoch, last = tonumber(e), id
  if mark_epoch > epoch then
    return redis.error_reply('FENCED forward mark of ' .. ARGV[1] .. ' is at epoch ' .. e ..
                             ', caller has ' .. ARGV[2])
  end
end
local last_ms, last_seq = parse(last)
local appended, skipped = 0, 0
local i = 3
while i <= #ARGV do
  local id = ARGV[i]
  local n = tonumber(ARGV[i + 1])
  local ms, seq = parse(id)
  if ms > last_ms or (ms == last_ms and seq > last_seq) then
    redis.call('XADD', KEYS[1], '*', unpack(ARGV, i + 2, i + 1 + n))
    last, last_ms, last_seq = id, ms, seq
    appended = appended + 1
  else
    skipped = skipped + 1
  end
  i = i + 2 + n
end
if appended > 0 or mark_epoch ~= epoch then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. ' ' .. last)
end
return {appended, skipped}
