-- Session close: expire every resting day order. Returns how many expired.
local expired = 0
for _, okey in ipairs(redis.call('SMEMBERS', '{sim}:day')) do
  local status = redis.call('HGET', okey, 'status')
  if status == 'new' or status == 'partially_filled' then
    unrest(okey)
    emit(okey, 'expired', '0', '', 'broker.session_close')
    expired = expired + 1
  end
end
redis.call('DEL', '{sim}:day')
return expired
