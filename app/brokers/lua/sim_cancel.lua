-- Cancel resting orders, one per key (a mass cancel sends many in one call).
-- KEYS[1] the venue's call counts, KEYS[2..] order hashes.
-- Returns, per key in order, {'canceled', cumulative filled qty (scaled)} when this call
-- canceled it, {'ended', its status, cumulative filled qty} when it had already ended
-- (filled, canceled by the venue as an IOC's remainder, expired, rejected), {'unknown'} when
-- the venue does not know the order.
redis.call('HINCRBY', KEYS[1], 'cancel_requests', 1)
local replies = {}
for i = 2, #KEYS do
  local o = load_order(KEYS[i])
  if not o then
    replies[#replies + 1] = {'unknown'}
  elseif o.status == 'new' or o.status == 'partially_filled' then
    unrest(o)
    emit(o, 'canceled', '0', '', 'canceled')
    save(o)
    replies[#replies + 1] = {'canceled', fmt(o.filled)}
  else
    replies[#replies + 1] = {'ended', o.status, fmt(o.filled)}
  end
end
return replies
