-- Shared helpers of the broker guard's scripts (pacing and the circuit breaker), prepended
-- to each broker_guard_*.lua at load time. One broker's guard state lives under its hash
-- tag, so every script stays in one slot:
--   og:{broker:B}:breaker     state (closed|open|half_open), failures (consecutive),
--                             opened_at (µs), half_open_at (µs), trials (admitted this
--                             round), successes, gen (bumped by every change of state),
--                             opened, closed (counts of changes)
--   og:{broker:B}:pace:E      tokens (may be negative: callers booked and waiting), ts (µs),
--                             taken, waited, throttled (counts); never expires
-- Time is Redis's own (token_bucket.lua, prepended before this), so every worker and
-- replica reads one clock.

-- The breaker as of `now`: an open breaker whose wait is over is half-open (written).
local function breaker_now(key, now, open_us)
  local f = redis.call('HMGET', key, 'state', 'failures', 'opened_at', 'half_open_at', 'trials',
    'successes', 'gen')
  local b = {
    state = f[1] or 'closed',
    failures = num(f[2], 0),
    opened_at = num(f[3], 0),
    half_open_at = num(f[4], 0),
    trials = num(f[5], 0),
    successes = num(f[6], 0),
    gen = num(f[7], 0),
  }
  if b.state == 'open' and now - b.opened_at >= open_us then
    b.state, b.half_open_at, b.trials, b.successes, b.gen = 'half_open', now, 0, 0, b.gen + 1
    redis.call('HSET', key, 'state', b.state, 'half_open_at', b.half_open_at, 'trials', 0,
      'successes', 0, 'gen', b.gen)
  end
  return b
end
