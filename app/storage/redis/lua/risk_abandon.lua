-- Give up an attempt at a reservation whose outcome the gateway never learned (Redis hung or
-- the connection failed: the order was answered 503, nothing was written). A hung server runs
-- what was sent meanwhile once it resumes, in any order with this script, so both orders end
-- the same: the tombstone stops the attempt's reserve script if it comes later, and what the
-- attempt reserved, if it came first, is released here. A later attempt (a retry under the
-- same client_order_id) is a different attempt and is left alone.
-- KEYS: risk, expo, resv (see risk_common), the attempt's tombstone
-- ARGV: client_order_id, attempt id, tombstone TTL (ms)
-- Returns 1 if a reservation was released, else 0.
local expo, resv, tombstone = KEYS[2], KEYS[3], KEYS[4]
redis.call('SET', tombstone, '1', 'PX', ARGV[3])
local rec = redis.call('HGET', resv, ARGV[1])
if not rec or split(rec)[6] ~= ARGV[2] then
  return 0
end
local view = exposure_view(expo)
local released = settle(view, resv, ARGV[1], '', '1', '')
write_exposure(view)
return released
