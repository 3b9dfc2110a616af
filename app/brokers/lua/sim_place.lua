-- Accept orders, one request for one or many (a batch): each matches what is marketable
-- against the reference price and rests the rest, as if placed alone, in the given order.
-- KEYS[1] placements still to fail (PUT /v1/sim/broker's fail_next), KEYS[2] the venue's
-- call counts, KEYS[3..] order hashes, one per order
-- ARGV[1] top-of-book qty (scaled); then per order PLACE_ARGS values: account,
--   client_order_id, symbol, side, qty (scaled), limit ('' for market), time_in_force,
--   injected reject reason ('' for none), the symbol's configured reference price ('' for
--   none)
-- Returns per order {'new'} | {'rejected', reason} | {'duplicate', status} | {'failed'}
-- (injected: as if that order never reached the venue)
local PLACE_ARGS = 9
local top = tonumber(ARGV[1])
redis.call('HINCRBY', KEYS[2], 'place_requests', 1)

local function place(okey, a)
  redis.call('HINCRBY', KEYS[2], 'placements', 1)
  if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then
    redis.call('DECR', KEYS[1])
    redis.call('HINCRBY', KEYS[2], 'failed', 1)
    return {'failed'}
  end
  if redis.call('EXISTS', okey) == 1 then
    return {'duplicate', redis.call('HGET', okey, 'status')}
  end
  local o = {key = okey, acct = a[1], coid = a[2], sym = a[3], side = a[4],
    qty = tonumber(a[5]), filled = 0, limit = a[6], tif = a[7], status = 'pending_new',
    seq = 0, member = ''}
  local reply = {'new'}
  local px = a[8] == '' and reference_price(o.sym, a[9])
  if a[8] ~= '' then
    emit(o, 'rejected', '0', '', a[8])
    reply = {'rejected', a[8]}
  elseif not px then
    emit(o, 'rejected', '0', '', 'broker.no_reference_price')
    reply = {'rejected', 'broker.no_reference_price'}
  else
    emit(o, 'new', '0', '', '')
    local status = 'new'
    if marketable(o.side, o.limit, px) then
      if o.tif == 'fok' and o.qty > top then
        emit(o, 'canceled', '0', '', 'broker.fok_unfilled')
        status = 'canceled'
      else
        status = fill(o, px, top)
      end
    end
    if status == 'new' or status == 'partially_filled' then
      if o.tif == 'ioc' or o.tif == 'fok' then
        emit(o, 'canceled', '0', '', 'broker.ioc_remainder')
      else
        rest(o)
      end
    end
  end
  save(o)
  return reply
end

local replies = {}
for i = 3, #KEYS do
  local first = 1 + (i - 3) * PLACE_ARGS
  replies[#replies + 1] = place(KEYS[i], {unpack(ARGV, first + 1, first + PLACE_ARGS)})
end
return replies
