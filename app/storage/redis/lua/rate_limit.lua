-- One API key's budget for one class of routes (inbound rate limit): a request takes a
-- token or is refused; it never waits.
-- KEYS[1] bucket
-- ARGV: rate (tokens/s), burst
-- Returns {allowed (0|1), remaining (whole tokens left), full_in_ms, retry_after_ms}
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_us()
-- A key's bucket expires once full again: a missing one is full.
local tokens = bucket_now(KEYS[1], now, rate, burst, burst)
local allowed, retry_ms = 0, 0
if tokens >= 1 then
  tokens, allowed = tokens - 1, 1
  redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'ts', now)
  redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
else
  retry_ms = math.ceil((1 - tokens) * 1000 / rate)
end
return {allowed, math.floor(tokens), math.ceil((burst - tokens) * 1000 / rate), retry_ms}
