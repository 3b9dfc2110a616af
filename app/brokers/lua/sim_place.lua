-- Accept an order, match what is marketable against the reference price, rest the rest.
-- KEYS[1] order hash, KEYS[2] placements still to fail (PUT /v1/sim/broker's fail_next),
-- KEYS[3] the venue's call counts
-- ARGV: account, client_order_id, symbol, side, qty (scaled), limit ('' for market),
--       time_in_force, top-of-book qty (scaled), injected reject reason ('' for none),
--       the symbol's configured reference price ('' for none)
-- Returns {'new'} | {'rejected', reason} | {'duplicate', status} | {'failed'} (injected: as
-- if the order never reached the venue)
redis.call('HINCRBY', KEYS[3], 'placements', 1)
if tonumber(redis.call('GET', KEYS[2]) or '0') > 0 then
  redis.call('DECR', KEYS[2])
  redis.call('HINCRBY', KEYS[3], 'failed', 1)
  return {'failed'}
end
local okey = KEYS[1]
if redis.call('EXISTS', okey) == 1 then
  return {'duplicate', redis.call('HGET', okey, 'status')}
end
local o = {key = okey, acct = ARGV[1], coid = ARGV[2], sym = ARGV[3], side = ARGV[4],
  qty = tonumber(ARGV[5]), filled = 0, limit = ARGV[6], tif = ARGV[7], status = 'pending_new',
  seq = 0, member = ''}

local function place()
  if ARGV[9] ~= '' then
    emit(o, 'rejected', '0', '', ARGV[9])
    return {'rejected', ARGV[9]}
  end
  local px = reference_price(o.sym, ARGV[10])
  if not px then
    emit(o, 'rejected', '0', '', 'broker.no_reference_price')
    return {'rejected', 'broker.no_reference_price'}
  end
  emit(o, 'new', '0', '', '')
  local top = tonumber(ARGV[8])
  local status = 'new'
  if marketable(o.side, o.limit, px) then
    if o.tif == 'fok' and o.qty > top then
      emit(o, 'canceled', '0', '', 'broker.fok_unfilled')
      return {'new'}
    end
    status = fill(o, px, top)
  end
  if status ~= 'filled' then
    if o.tif == 'ioc' or o.tif == 'fok' then
      emit(o, 'canceled', '0', '', 'broker.ioc_remainder')
    else
      rest(o)
    end
  end
  return {'new'}
end

local reply = place()
save(o)
return reply
