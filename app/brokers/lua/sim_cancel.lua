-- Cancel a resting order. KEYS[1] order hash.
-- Returns {'canceled'} or {<current status>} when too late, {'unknown'} when never seen.
local okey = KEYS[1]
local status = redis.call('HGET', okey, 'status')
if not status then
  return {'unknown'}
end
if status == 'new' or status == 'partially_filled' then
  unrest(okey)
  emit(okey, 'canceled', '0', '', 'canceled')
  return {'canceled'}
end
return {status}
