-- Market data's last trades as the venue's prices, many symbols in one call: the prices
-- are set, then each symbol's resting orders its price crosses fill as in sim_match.lua
-- (a symbol with no resting order costs one EXISTS: Redis deletes an emptied book).
-- ARGV[1] top-of-book qty (scaled), then per symbol: symbol, price.
-- Returns the number of fills.
local top = tonumber(ARGV[1])
local fills = 0
for from = 2, #ARGV, 2000 do  -- a thousand prices at a time (unpack has a limit)
  redis.call('HSET', '{sim}:px', unpack(ARGV, from, math.min(from + 1999, #ARGV)))
end
for i = 2, #ARGV, 2 do
  local symbol = ARGV[i]
  if redis.call('EXISTS', '{sim}:book:' .. symbol .. ':buy', '{sim}:book:' .. symbol .. ':sell') > 0 then
    fills = fills + match_symbol(symbol, ARGV[i + 1], top)
  end
end
return fills
