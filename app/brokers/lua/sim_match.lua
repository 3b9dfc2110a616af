-- Match one symbol's resting orders against its reference price; each marketable order
-- takes at most the top-of-book quantity per call (so large orders fill in parts).
-- ARGV[1] symbol, ARGV[2] top-of-book qty (scaled), ARGV[3] the symbol's configured
-- reference price ('' for none). Returns the number of fills.
local px = reference_price(ARGV[1], ARGV[3])
if not px then
  return 0
end
local top = tonumber(ARGV[2])
local fills = 0
local sides = {
  {'{sim}:book:' .. ARGV[1] .. ':buy', px, '+inf'},
  {'{sim}:book:' .. ARGV[1] .. ':sell', '-inf', px},
}
for _, s in ipairs(sides) do
  local members = redis.call('ZRANGEBYSCORE', s[1], s[2], s[3], 'LIMIT', 0, 1000)
  for _, member in ipairs(members) do
    local o = load_order(string.sub(member, 18))
    if o then
      if fill(o, px, top) == 'filled' then
        unrest(o)
      end
      save(o)
      fills = fills + 1
    end
  end
end
return fills
