-- Claiming an idempotency key, prepended to every script that claims one.
-- Returns nil when the claim is now this request's; otherwise the stored value:
--   "P|<fingerprint>"                      another request is in flight
--   "D|<fingerprint>|<status>|<body>"      the answer already given
local function claim_key(key, fingerprint, ttl_ms)
  local current = redis.call('GET', key)
  if current then
    return current
  end
  redis.call('SET', key, 'P|' .. fingerprint, 'PX', ttl_ms)
  return nil
end
