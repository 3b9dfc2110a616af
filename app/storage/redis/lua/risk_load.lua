-- Rebuild one account's risk state from the database's view of it, unless it is there.
-- KEYS: risk, expo, resv
-- ARGV[1] JSON: {limits: {field: value}, kills: {kill_account: [on, gen], kill_global:
--   [on, gen]}, positions: {S: qty}, marks: {S: price}, reservations: [[coid, S, side, qty,
--   filled]]}; ARGV[2] '1' to replace state that is there (limits are never lost that way:
--   the document holds them), else only when missing.
-- Kill switch values carry a generation: a newer one already in Redis is kept.
local risk, expo, resv = KEYS[1], KEYS[2], KEYS[3]
if ARGV[2] ~= '1' and redis.call('HGET', risk, 'built') == '1' then
  return 0
end
local doc = cjson.decode(ARGV[1])
local kills = {}
for field, value in pairs(doc.kills) do
  local current = redis.call('HMGET', risk, field, 'gen:' .. field)
  if current[2] and tonumber(current[2]) > tonumber(value[2]) then
    kills[field] = {current[1], current[2]}
  else
    kills[field] = {value[1], tostring(value[2])}
  end
end
redis.call('DEL', risk, expo, resv)
for field, value in pairs(doc.limits) do
  redis.call('HSET', risk, field, tostring(value))
end
for field, value in pairs(kills) do
  redis.call('HSET', risk, field, value[1], 'gen:' .. field, value[2])
end

local buys, sells, symbols = {}, {}, {}
for sym, qty in pairs(doc.positions) do
  symbols[sym] = true
end
local now = fmt(now_ms())
for _, r in ipairs(doc.reservations) do
  local coid, sym, side, qty, filled = r[1], r[2], r[3], tonumber(r[4]), tonumber(r[5])
  redis.call('HSET', resv, coid, table.concat({sym, side, fmt(qty), fmt(filled), now}, '|'))
  local rest = qty - filled
  if side == 'buy' then
    buys[sym] = (buys[sym] or 0) + rest
  else
    sells[sym] = (sells[sym] or 0) + rest
  end
  symbols[sym] = true
end
for sym, _ in pairs(symbols) do
  store_exposure(expo, sym, tonumber(doc.positions[sym] or 0), buys[sym] or 0,
    sells[sym] or 0, tonumber(doc.marks[sym] or 0))
end
redis.call('HSET', risk, 'built', '1')
return 1
