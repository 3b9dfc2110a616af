-- One signal cycle, published only if it reaches past the md:events entry the latest
-- values already stand on: a worker that lost its lease while computing (a pause, a
-- stalled host) can neither publish a cycle twice nor move the latest values back.
-- KEYS: 1 the signals stream, 2 the latest values hash
-- ARGV: 1 the md:events entry id this cycle reaches, 2 the stream's max length,
--       3 the cycle (JSON), then symbol, values (JSON), ...
local function entry_id(text)
  local ms, seq = string.match(text or '0-0', '^(%d+)-(%d+)$')
  return tonumber(ms or 0), tonumber(seq or 0)
end
local ms, seq = entry_id(ARGV[1])
local done_ms, done_seq = entry_id(redis.call('HGET', KEYS[2], '@last_event'))
if ms < done_ms or (ms == done_ms and seq <= done_seq) then
  return 0
end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'cycle', ARGV[3])
for from = 4, #ARGV, 2000 do  -- a thousand symbols at a time (unpack has a limit)
  redis.call('HSET', KEYS[2], unpack(ARGV, from, math.min(from + 1999, #ARGV)))
end
redis.call('HSET', KEYS[2], '@last_event', ARGV[1])
return 1
