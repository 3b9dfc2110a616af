-- A broker call's outcome, for the breaker. A call admitted under another generation (the
-- breaker has changed state since) no longer counts. 'unused': admitted, but the call was
-- never made (the order was not written, a cancel found nothing to cancel): a trial's slot
-- is given back.
-- KEYS[1] breaker
-- ARGV: outcome ('success'|'failure'|'unused'), gen (from admit), failure_threshold,
--       half_open_trials, open_ms
-- Returns {state, changed (0|1)}.
local outcome, gen = ARGV[1], tonumber(ARGV[2])
local threshold, trials = tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_us()
local b = breaker_now(KEYS[1], now, tonumber(ARGV[5]) * 1000)
if gen ~= b.gen then
  return {b.state, 0}
end

local function open()
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', now, 'failures', 0, 'trials', 0,
    'successes', 0, 'gen', b.gen + 1)
  redis.call('HINCRBY', KEYS[1], 'opened', 1)
  return {'open', 1}
end

if outcome == 'unused' then
  if b.state == 'half_open' and b.trials > 0 then
    redis.call('HSET', KEYS[1], 'trials', b.trials - 1)
  end
  return {b.state, 0}
end
if outcome == 'failure' then
  if b.state == 'half_open' or b.failures + 1 >= threshold then
    return open()
  end
  redis.call('HSET', KEYS[1], 'failures', b.failures + 1)
  return {b.state, 0}
end
if b.state == 'half_open' then
  if b.successes + 1 >= trials then
    redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', 0, 'trials', 0, 'successes', 0,
      'gen', b.gen + 1)
    redis.call('HINCRBY', KEYS[1], 'closed', 1)
    return {'closed', 1}
  end
  redis.call('HSET', KEYS[1], 'successes', b.successes + 1)
  return {b.state, 0}
end
if b.failures > 0 then
  redis.call('HSET', KEYS[1], 'failures', 0)
end
return {b.state, 0}
