-- A token bucket on Redis's own clock, shared by every client: helpers prepended to the
-- scripts that keep one (broker pacing, inbound API limits). A bucket is a hash:
-- tokens (a float; below zero when callers booked tokens not yet refilled) and ts (µs).

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function num(v, default)
  if not v then
    return default
  end
  return tonumber(v)
end

-- The bucket as of `now`: refilled by the time since it was last written (not written).
-- `missing`: the tokens of a bucket Redis does not have.
local function bucket_now(key, now, rate, burst, missing)
  local f = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = num(f[1], missing)
  local ts = num(f[2], now)
  if now > ts then
    tokens = math.min(burst, tokens + (now - ts) * rate / 1000000)
  end
  return tokens
end
