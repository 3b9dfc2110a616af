-- A gateway starting: each pacing bucket Redis does not have begins now, empty (it fills
-- at its rate from here). One that exists is left as it is.
-- KEYS: the buckets
local now = now_us()
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 'tokens', '0', 'ts', now)
  end
end
return #KEYS
