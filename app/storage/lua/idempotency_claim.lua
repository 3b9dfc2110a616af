-- Claim an idempotency key, or tell who holds it. One round trip, atomic.
-- KEYS[1] idempotency key
-- ARGV[1] request fingerprint, ARGV[2] in-flight claim TTL (ms)
-- Returns nil when the claim is ours; otherwise the stored value:
--   "P|<fingerprint>"                      another request is in flight
--   "D|<fingerprint>|<status>|<body>"      the answer already given
local current = redis.call('GET', KEYS[1])
if current then
  return current
end
redis.call('SET', KEYS[1], 'P|' .. ARGV[1], 'PX', ARGV[2])
return false
