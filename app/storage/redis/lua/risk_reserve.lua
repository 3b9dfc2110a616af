-- The stateful pre-trade checks and the reservation, in one atomic step.
-- KEYS: risk, expo, resv (see risk_common), dup (the duplicate-window key of this order)
-- ARGV: client_order_id, symbol, side, qty (scaled), mark price, duplicate window ms ('' off),
--       now in ms (the gateway's clock: only ages reservations for the orphan sweep),
--       attempt id (unique per call; kept in the reservation record)
-- KEYS[5]: the attempt's tombstone (see risk_abandon.lua)
-- Returns {'ok'} reserved | {'held'} already reserved under this id | {'nostate'} the account
-- has no risk state here (rebuild it from the database) | {'reject', code, detail} |
-- {'abandoned'} the gateway already gave this attempt up: nothing done |
-- {'claimed', value} another request holds the idempotency key: nothing checked or reserved
-- With KEYS[6], the order's idempotency key (same hash tag), the key is claimed before any
-- check, in the same atomic step: ARGV[9] request fingerprint, ARGV[10] in-flight claim TTL
-- (ms). 'abandoned' and 'nostate' come before the claim: they claim nothing.
if redis.call('EXISTS', KEYS[5]) == 1 then
  return {'abandoned'}
end
local risk, expo, resv, dup = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local coid, sym, side, qty, mark, window = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]),
  tonumber(ARGV[5]), ARGV[6]

local r = redis.call('HMGET', risk, 'built', 'state', 'kill_account', 'kill_global',
  'max_position', 'max_gross', 'max_open', 'maxpos:' .. sym)
if r[1] ~= '1' then
  return {'nostate'}
end
if KEYS[6] then
  local holder = claim_key(KEYS[6], ARGV[9], ARGV[10])
  if holder then
    return {'claimed', holder}
  end
end
if redis.call('HEXISTS', resv, coid) == 1 then
  return {'held'}
end

local e = redis.call('HMGET', expo, 'pos:' .. sym, 'buy:' .. sym, 'sell:' .. sym,
  'gx:' .. sym, 'gross')
local pos, buys, sells, gx_old, gross_old = num(e[1]), num(e[2]), num(e[3]), num(e[4]), num(e[5])

-- Risk-reducing: shrinks the position even if every open order on its side fills first.
local reducing
local old_buys, old_sells = buys, sells
if side == 'buy' then
  reducing = pos < 0 and pos + buys + qty <= 0
  buys = buys + qty
else
  reducing = pos > 0 and pos - sells - qty >= 0
  sells = sells + qty
end

if r[2] == 'halted' then
  return {'reject', 'risk.trading_halted', 'trading is halted for this account'}
end
if not reducing then
  if r[4] == '1' then
    return {'reject', 'risk.kill_switch', 'the global kill switch is on'}
  end
  if r[3] == '1' then
    return {'reject', 'risk.kill_switch', 'the kill switch is on for this account'}
  end
  if r[2] == 'reduce_only' then
    return {'reject', 'risk.reduce_only', 'the account may only reduce positions'}
  end
end

local limit = r[8] or r[5]
if limit then
  limit = tonumber(limit)
  if (side == 'buy' and pos + buys > limit) or (side == 'sell' and pos - sells < -limit) then
    return {'reject', 'risk.position_limit', string.format(
      '%s position would reach %s (open orders counted as filled); limit %s', sym,
      qty_text(side == 'buy' and pos + buys or pos - sells), qty_text(limit))}
  end
end

if r[7] and redis.call('HLEN', resv) + 1 > tonumber(r[7]) then
  return {'reject', 'risk.max_open_orders', 'open order limit ' .. r[7] .. ' reached'}
end

if r[6] then
  -- Only an order that raises its symbol's worst-case quantity can breach the gross limit
  -- (judged at today's mark: a price move alone must not block an order that reduces).
  local gx_new = worst_notional(pos, buys, sells, mark)
  local gross_new = gross_old - gx_old + gx_new
  if gx_new > worst_notional(pos, old_buys, old_sells, mark) and gross_new > tonumber(r[6]) then
    return {'reject', 'risk.gross_notional_limit', string.format(
      'gross exposure would reach %.2f; limit %s', gross_new, r[6])}
  end
end

-- Last check, as it is also the first write: the window starts with this order.
if window ~= '' and not redis.call('SET', dup, coid, 'NX', 'PX', window) then
  return {'reject', 'risk.duplicate_order', string.format(
    'same symbol, side, qty and price as order %s within %s ms', redis.call('GET', dup), window)}
end

redis.call('HSET', resv, coid, table.concat({sym, side, ARGV[4], '0', ARGV[7], ARGV[8]}, '|'))
store_exposure(expo, sym, pos, buys, sells, mark, gx_old, gross_old)
return {'ok'}
