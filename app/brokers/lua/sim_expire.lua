-- Session close: expire every resting day order. Returns how many expired.
local expired = 0
for _, okey in ipairs(redis.call('SMEMBERS', '{sim}:day')) do
  local o = load_order(okey)
  if o and (o.status == 'new' or o.status == 'partially_filled') then
    unrest(o)
    emit(o, 'expired', '0', '', 'broker.session_close')
    save(o)
    expired = expired + 1
  end
end
redis.call('DEL', '{sim}:day')
return expired
