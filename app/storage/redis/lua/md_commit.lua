-- One batch of processed ticks, all or nothing, only if the processor's cursor is still
-- where this batch started (a second processor, past a lapsed lease, committed first: its
-- batch stands and this one is dropped, to be read again from the new cursor).
-- KEYS: 1 processor state hash, 2 last trades hash, 3 events stream, 4 dead-letter
--       stream, 5 dead-letter counts hash, 6 last completed bar per symbol (hash),
--       7 the minutes with bars (zset), 8.. one hash per minute with completed bars below
-- ARGV: 1 expected cursor ('' none yet), 2 new cursor, 3 events max length, 4 dead
--       letters max length, 5..11 how many of each list follows: S symbol states
--       (symbol, text), L last trades (symbol, price), E events entry fields (field,
--       value), D dead letters (reason, text), LB last bars (symbol, text), B completed
--       bars by minute (symbol, text), M minutes (start_us, how many of the bars, in
--       order, are that minute's); then the lists, flat, in that order.
local cursor = redis.call('HGET', KEYS[1], '@cursor') or ''
if cursor ~= ARGV[1] then
  return 0
end

-- HSET of `count` field/value pairs from ARGV[from], a thousand at a time (Lua's unpack
-- has a limit of a few thousand values).
local function hset_pairs(key, from, count)
  local done = 0
  while done < count do
    local n = math.min(count - done, 1000)
    redis.call('HSET', key, unpack(ARGV, from + 2 * done, from + 2 * (done + n) - 1))
    done = done + n
  end
end

local s, l, e, d, lb, b, m = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]),
  tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local at = 12
redis.call('HSET', KEYS[1], '@cursor', ARGV[2])
hset_pairs(KEYS[1], at, s)
at = at + 2 * s
hset_pairs(KEYS[2], at, l)
at = at + 2 * l
if e > 0 then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, at, at + 2 * e - 1))
end
at = at + 2 * e
for i = 0, d - 1 do
  local reason, text = ARGV[at + 2 * i], ARGV[at + 2 * i + 1]
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*', 'reason', reason, 'tick', text)
  redis.call('HINCRBY', KEYS[5], reason, 1)
end
at = at + 2 * d
hset_pairs(KEYS[6], at, lb)
at = at + 2 * lb
local bars = at
at = at + 2 * b
for i = 0, m - 1 do
  local start, count = ARGV[at + 2 * i], tonumber(ARGV[at + 2 * i + 1])
  hset_pairs(KEYS[8 + i], bars, count)
  redis.call('ZADD', KEYS[7], start, start)
  bars = bars + 2 * count
end
return 1
