-- Fills and ends of one account's orders: reserved exposure becomes position, what is left
-- is released. Idempotent and commutative: each carries the cumulative filled quantity (an
-- end, the broker's final one), so a report applied twice, a fill after its order's end, or
-- a release after the final report changes nothing.
-- KEYS: risk, expo, resv
-- ARGV: four per order: client_order_id, cumulative filled qty (scaled),
--       final ('1' or '0'), mark price ('' keeps the stored one)
-- Returns how many reservations changed.
local view = exposure_view(KEYS[2])
local changed = 0
for i = 1, #ARGV, 4 do
  changed = changed + settle(view, KEYS[3], ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3])
end
write_exposure(view)
return changed
