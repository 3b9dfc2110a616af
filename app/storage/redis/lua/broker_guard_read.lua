-- The breaker and the buckets as of now, for GET /v1/breakers and GET /v1/pacing (writes
-- nothing but an open breaker's move to half-open, which admit would make anyway).
-- KEYS[1] breaker, KEYS[2..] buckets
-- ARGV: open_ms, half_open_trials, then per bucket: rate, burst
-- Returns {breaker fields..., then per bucket {tokens, taken, waited, throttled}}
local now = now_us()
local b = breaker_now(KEYS[1], now, tonumber(ARGV[1]) * 1000)
local open_us = tonumber(ARGV[1]) * 1000
local retry_ms = 0
if b.state == 'open' then
  retry_ms = math.ceil((b.opened_at + open_us - now) / 1000)
elseif b.state == 'half_open' and b.trials >= tonumber(ARGV[2]) then
  retry_ms = math.max(0, math.ceil((b.half_open_at + open_us - now) / 1000))
end
local counts = redis.call('HMGET', KEYS[1], 'opened', 'closed')
local out = {{b.state, b.failures, b.trials, b.successes, retry_ms, num(counts[1], 0),
  num(counts[2], 0)}}
for i = 2, #KEYS do
  local rate, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local tokens = bucket_now(KEYS[i], now, rate, burst, 0)
  local c = redis.call('HMGET', KEYS[i], 'taken', 'waited', 'throttled')
  out[#out + 1] = {string.format('%.6f', tokens), num(c[1], 0), num(c[2], 0), num(c[3], 0)}
end
return out
