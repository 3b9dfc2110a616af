-- May a call go to the broker? The breaker first (an open one refuses at once, taking no
-- token), then a token from the endpoint's bucket: now, or booked for when it will have
-- refilled, first come first served, if that is within the caller's wait.
-- KEYS[1] breaker, KEYS[2] bucket
-- ARGV: rate (tokens/s), burst, max_wait_ms, open_ms, half_open_trials, ask_breaker ('1',
--       or '0' for a call that is paced only: a kill switch's mass cancel)
-- Returns {'ok', wait_us, gen, trial (0|1), failures}, {'open', retry_after_ms},
-- or {'paced', retry_after_ms}.
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local max_wait_us = tonumber(ARGV[3]) * 1000
local open_us = tonumber(ARGV[4]) * 1000
local max_trials = tonumber(ARGV[5])
local now = now_us()

local b = breaker_now(KEYS[1], now, open_us)
local ask_breaker = ARGV[6] == '1'
if ask_breaker and b.state == 'open' then
  return {'open', math.ceil((b.opened_at + open_us - now) / 1000)}
end
local trial = 0
if ask_breaker and b.state == 'half_open' then
  if b.trials >= max_trials then
    if now - b.half_open_at < open_us then
      -- Every trial of this round is out; they report back, or the round starts over.
      return {'open', math.ceil((b.half_open_at + open_us - now) / 1000)}
    end
    -- A round whose trials never reported (their workers died): start another.
    b.trials, b.successes, b.half_open_at, b.gen = 0, 0, now, b.gen + 1
    redis.call('HSET', KEYS[1], 'trials', 0, 'successes', 0, 'half_open_at', now, 'gen', b.gen)
  end
  trial = 1
end

-- A pacing bucket never expires: one Redis does not have was lost with Redis's state (or
-- was never made), and starts empty, so that losing Redis never hands out a fresh burst.
local available = bucket_now(KEYS[2], now, rate, burst, 0)
local tokens = available - 1
local wait_us = 0
if tokens < 0 then
  wait_us = math.ceil(-tokens * 1000000 / rate)
end
if wait_us > max_wait_us then
  -- Written as of now, unchanged: a bucket Redis had lost fills from here, not from the
  -- next call that takes a token (a caller that never waits would find it empty forever).
  redis.call('HSET', KEYS[2], 'tokens', string.format('%.6f', available), 'ts', now)
  redis.call('HINCRBY', KEYS[2], 'throttled', 1)
  return {'paced', math.ceil(wait_us / 1000)}
end
redis.call('HSET', KEYS[2], 'tokens', string.format('%.6f', tokens), 'ts', now)
redis.call('HINCRBY', KEYS[2], wait_us > 0 and 'waited' or 'taken', 1)
if trial == 1 then
  redis.call('HINCRBY', KEYS[1], 'trials', 1)
end
return {'ok', wait_us, b.gen, trial, b.failures}
