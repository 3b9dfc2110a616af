-- An order's fills and its end: reserved exposure becomes position, what is left is released.
-- Idempotent: ARGV carries the cumulative filled quantity, so a report applied twice (or a
-- release after the final report) changes nothing.
-- KEYS: risk, expo, resv
-- ARGV: client_order_id, cumulative filled qty (scaled, '' unknown), final ('1' or '0'),
--       mark price ('' keeps the stored one)
-- Returns 1 if the reservation changed, else 0.
local expo, resv = KEYS[2], KEYS[3]
local coid = ARGV[1]
local rec = redis.call('HGET', resv, coid)
if not rec then
  return 0
end
local p = split(rec)
local sym, side, qty, filled = p[1], p[2], tonumber(p[3]), tonumber(p[4])
local e = redis.call('HMGET', expo, 'pos:' .. sym, 'buy:' .. sym, 'sell:' .. sym, 'mark:' .. sym)
local pos, buys, sells = num(e[1]), num(e[2]), num(e[3])
local mark = num(e[4])
if ARGV[4] ~= '' then
  mark = tonumber(ARGV[4])
end

local delta = 0
if ARGV[2] ~= '' then
  delta = math.min(qty, tonumber(ARGV[2])) - filled
end
local changed = 0
if delta > 0 then
  filled = filled + delta
  if side == 'buy' then
    pos, buys = pos + delta, buys - delta
  else
    pos, sells = pos - delta, sells - delta
  end
  changed = 1
end
if ARGV[3] == '1' or filled >= qty then
  local rest = qty - filled
  if side == 'buy' then
    buys = buys - rest
  else
    sells = sells - rest
  end
  redis.call('HDEL', resv, coid)
  changed = 1
elseif changed == 1 then
  redis.call('HSET', resv, coid, table.concat({sym, side, fmt(qty), fmt(filled), p[5]}, '|'))
end
if changed == 1 then
  store_exposure(expo, sym, pos, buys, sells, mark)
end
return changed
