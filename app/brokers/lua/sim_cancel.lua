-- Cancel a resting order. KEYS[1] order hash.
-- Returns {'canceled'} or {<current status>} when too late, {'unknown'} when never seen.
local o = load_order(KEYS[1])
if not o then
  return {'unknown'}
end
if o.status == 'new' or o.status == 'partially_filled' then
  unrest(o)
  emit(o, 'canceled', '0', '', 'canceled')
  save(o)
  return {'canceled'}
end
return {o.status}
