-- Accept an order, match what is marketable against the reference price, rest the rest.
-- KEYS[1] order hash
-- ARGV: account, client_order_id, symbol, side, qty (scaled), limit ('' for market),
--       time_in_force, top-of-book qty (scaled), injected reject reason ('' for none)
-- Returns {'new'} | {'rejected', reason} | {'duplicate', status}
local okey = KEYS[1]
if redis.call('EXISTS', okey) == 1 then
  return {'duplicate', redis.call('HGET', okey, 'status')}
end
local side, limit, tif = ARGV[4], ARGV[6], ARGV[7]
redis.call('HSET', okey, 'acct', ARGV[1], 'coid', ARGV[2], 'sym', ARGV[3], 'side', side,
  'qty', ARGV[5], 'filled', '0', 'limit', limit, 'tif', tif, 'status', 'pending_new', 'seq', 0)
if ARGV[9] ~= '' then
  emit(okey, 'rejected', '0', '', ARGV[9])
  return {'rejected', ARGV[9]}
end
local px = redis.call('HGET', '{sim}:px', ARGV[3])
if not px then
  emit(okey, 'rejected', '0', '', 'broker.no_reference_price')
  return {'rejected', 'broker.no_reference_price'}
end
emit(okey, 'new', '0', '', '')
local top = tonumber(ARGV[8])
local status = 'new'
if marketable(side, limit, px) then
  if tif == 'fok' and tonumber(ARGV[5]) > top then
    emit(okey, 'canceled', '0', '', 'broker.fok_unfilled')
    return {'new'}
  end
  status = fill(okey, px, top)
end
if status ~= 'filled' then
  if tif == 'ioc' or tif == 'fok' then
    emit(okey, 'canceled', '0', '', 'broker.ioc_remainder')
  else
    rest(okey)
  end
end
return {'new'}
