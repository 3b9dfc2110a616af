-- Match one symbol's resting orders against its reference price; each marketable order
-- takes at most the top-of-book quantity per call (so large orders fill in parts).
-- ARGV[1] symbol, ARGV[2] top-of-book qty (scaled), ARGV[3] the symbol's configured
-- reference price ('' for none). Returns the number of fills.
local px = reference_price(ARGV[1], ARGV[3])
if not px then
  return 0
end
return match_symbol(ARGV[1], px, tonumber(ARGV[2]))
