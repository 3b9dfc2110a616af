-- Shared helpers of the paper exchange, prepended to each sim_*.lua script at load time.
-- The whole exchange lives under the hash tag {sim} (one venue, one slot).
-- Quantities are integers scaled by 10^6 (exact in a Lua double up to 2^53); prices are
-- decimal strings, compared as numbers and copied verbatim into fills.

local function fmt(n)
  return string.format('%d', n)
end

local function now_ms()
  local t = redis.call('TIME')
  return fmt(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end

-- One execution report per event, sequenced per order (FIX-like: cumulative quantity).
local function emit(okey, status, last_qty, last_px, reason)
  local seq = redis.call('HINCRBY', okey, 'seq', 1)
  redis.call('HSET', okey, 'status', status)
  local o = redis.call('HMGET', okey, 'acct', 'coid', 'sym', 'side', 'filled')
  local epoch = redis.call('GET', '{sim}:epoch')
  if not epoch then
    -- The venue's Redis came back empty: a new incarnation, until start-up names it.
    epoch = 'r' .. now_ms()
    redis.call('SET', '{sim}:epoch', epoch)
  end
  local exec_id = epoch .. '-' .. redis.call('INCR', '{sim}:seq')
  redis.call('XADD', '{sim}:exec', 'MAXLEN', '~', '1000000', '*',
    'a', o[1], 'c', o[2], 'x', exec_id, 'q', seq, 's', status, 'cum', o[5],
    'lq', last_qty, 'lp', last_px, 'r', reason, 'sym', o[3], 'side', o[4], 't', now_ms())
end

local function book_key(okey)
  local o = redis.call('HMGET', okey, 'sym', 'side')
  return '{sim}:book:' .. o[1] .. ':' .. o[2]
end

local function marketable(side, limit, px)
  if limit == '' then
    return true
  end
  if side == 'buy' then
    return tonumber(limit) >= tonumber(px)
  end
  return tonumber(limit) <= tonumber(px)
end

-- Fill up to `avail` of the order's remaining quantity at `px`; returns the new status.
local function fill(okey, px, avail)
  local o = redis.call('HMGET', okey, 'qty', 'filled')
  local qty, filled = tonumber(o[1]), tonumber(o[2])
  local n = math.min(qty - filled, avail)
  if n <= 0 then
    return redis.call('HGET', okey, 'status')
  end
  filled = filled + n
  redis.call('HSET', okey, 'filled', fmt(filled))
  local status = 'partially_filled'
  if filled >= qty then
    status = 'filled'
  end
  emit(okey, status, fmt(n), px, '')
  return status
end

-- Put the order on its side of the book: price priority by score, time priority by member.
local function rest(okey)
  local o = redis.call('HMGET', okey, 'side', 'limit', 'tif')
  local score = o[2]
  if score == '' then
    score = (o[1] == 'buy') and '+inf' or '-inf'
  end
  local member = string.format('%016d', redis.call('INCR', '{sim}:seq')) .. '|' .. okey
  redis.call('HSET', okey, 'member', member)
  redis.call('ZADD', book_key(okey), score, member)
  if o[3] == 'day' then
    redis.call('SADD', '{sim}:day', okey)
  end
end

local function unrest(okey)
  local member = redis.call('HGET', okey, 'member')
  if member then
    redis.call('ZREM', book_key(okey), member)
  end
  redis.call('SREM', '{sim}:day', okey)
end
