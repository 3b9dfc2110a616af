-- Cancel a resting order. KEYS[1] order hash.
-- Returns {'canceled', cumulative filled qty (scaled)} when this call canceled it,
-- {'ended', its status, cumulative filled qty} when it had already ended (filled, canceled by
-- the venue as an IOC's remainder, expired, rejected), {'unknown'} when the venue does not
-- know the order.
local o = load_order(KEYS[1])
if not o then
  return {'unknown'}
end
if o.status == 'new' or o.status == 'partially_filled' then
  unrest(o)
  emit(o, 'canceled', '0', '', 'canceled')
  save(o)
  return {'canceled', fmt(o.filled)}
end
return {'ended', o.status, fmt(o.filled)}
