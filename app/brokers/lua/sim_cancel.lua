-- Cancel a resting order. KEYS[1] order hash.
-- Returns {'canceled', cumulative filled qty (scaled)} or {<current status>} when too late,
-- {'unknown'} when the venue does not know the order.
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
return {o.status}
