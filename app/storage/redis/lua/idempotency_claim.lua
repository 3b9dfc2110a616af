-- Claim an idempotency key, or tell who holds it. One round trip, atomic.
-- KEYS[1] idempotency key
-- ARGV[1] request fingerprint, ARGV[2] in-flight claim TTL (ms)
-- Returns nil when the claim is ours; otherwise the stored value (see claim_key).
return claim_key(KEYS[1], ARGV[1], ARGV[2]) or false
