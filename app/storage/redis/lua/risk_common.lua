-- Shared helpers of the risk scripts, prepended to each risk_*.lua at load time.
-- One account's risk state lives under its hash tag, so every script stays in one slot:
--   KEYS[1] og:{A}:risk  limits, trading state, kill switches (+ their generations), 'built'
--   KEYS[2] og:{A}:expo  per symbol: pos:S, buy:S, sell:S (open qty), mark:S, gx:S; gross
--   KEYS[3] og:{A}:resv  client_order_id -> 'symbol|side|qty|filled|reserved_at_ms|attempt'
--                        (attempt: the reserving call's id; empty when rebuilt from the database)
-- Quantities are integers scaled by 10^6 (exact in a Lua double up to 2^53); notionals are
-- doubles in currency units (a risk bound, not money accounting).
local SCALE = 1000000

local function fmt(n)
  return string.format('%d', n)
end

-- A scaled quantity as people write it, for messages: 75000000000 -> 75000, 1500000 -> 1.5.
local function qty_text(n)
  local text = string.format('%.6f', n / SCALE)
  text = string.gsub(text, '0+$', '')
  text = string.gsub(text, '%.$', '')
  return text
end

local function num(v)
  if not v then
    return 0
  end
  return tonumber(v)
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Worst-case absolute position if every open order on one side filled, as notional.
local function worst_notional(pos, buys, sells, mark)
  local q = math.max(math.abs(pos + buys), math.abs(pos - sells))
  return q / SCALE * mark
end

-- Write a symbol's exposure and keep the account's gross total in step with it.
-- gx_old, gross_old: the stored values, when the caller has already read them.
local function store_exposure(expo, sym, pos, buys, sells, mark, gx_old, gross_old)
  if gx_old == nil then
    local e = redis.call('HMGET', expo, 'gx:' .. sym, 'gross')
    gx_old, gross_old = num(e[1]), num(e[2])
  end
  -- Open quantities never go below zero (a release of more than was reserved); the worst
  -- case is judged on what is stored.
  buys, sells = math.max(0, buys), math.max(0, sells)
  local gx = worst_notional(pos, buys, sells, mark)
  local gross = math.max(0, gross_old - gx_old + gx)
  redis.call('HSET', expo, 'pos:' .. sym, fmt(pos), 'buy:' .. sym, fmt(buys),
    'sell:' .. sym, fmt(sells), 'mark:' .. sym, string.format('%.17g', mark),
    'gx:' .. sym, string.format('%.17g', gx), 'gross', string.format('%.17g', gross))
  return gx, gross
end

local function split(rec)
  local parts = {}
  for part in string.gmatch(rec, '[^|]+') do
    parts[#parts + 1] = part
  end
  return parts
end

-- Several settlements' view of the account's exposure: each symbol is read once, on first
-- use, and written once, by `write_exposure` (a batch is mostly one account's few symbols:
-- reading and writing them per order was most of a settlement's time in Redis).
local function exposure_view(expo)
  return {expo = expo, symbols = {}, gross = nil}
end

local function view_symbol(view, sym)
  local s = view.symbols[sym]
  if not s then
    local e = redis.call('HMGET', view.expo, 'pos:' .. sym, 'buy:' .. sym, 'sell:' .. sym,
      'mark:' .. sym, 'gx:' .. sym, 'gross')
    s = {pos = num(e[1]), buys = num(e[2]), sells = num(e[3]), mark = num(e[4]),
      gx = num(e[5]), changed = false}
    if view.gross == nil then
      view.gross = num(e[6])
    end
    view.symbols[sym] = s
  end
  return s
end

local function write_exposure(view)
  for sym, s in pairs(view.symbols) do
    if s.changed then
      s.gx, view.gross = store_exposure(view.expo, sym, s.pos, s.buys, s.sells, s.mark, s.gx,
        view.gross)
      s.changed = false
    end
  end
end

-- An order's fills and its end (the body of risk_settle.lua; risk_abandon.lua uses it too),
-- applied to `view`, which `write_exposure` then stores.
-- cum_filled: cumulative filled qty (scaled; '' only from risk_abandon.lua, for an attempt that
-- was never placed); final: '1' or '0'; mark_arg: '' keeps the stored mark.
-- An end carries the broker's final cumulative quantity, so the reservation can go with it:
-- any fill that reaches Redis later is already counted (its cum_filled is no larger).
-- Returns 1 if the reservation changed, else 0.
local function settle(view, resv, coid, cum_filled, final, mark_arg)
  local rec = redis.call('HGET', resv, coid)
  if not rec then
    return 0
  end
  local p = split(rec)
  local sym, side, qty, filled = p[1], p[2], tonumber(p[3]), tonumber(p[4])
  local s = view_symbol(view, sym)
  local pos, buys, sells = s.pos, s.buys, s.sells

  local delta = 0
  if cum_filled ~= '' then
    delta = math.min(qty, tonumber(cum_filled)) - filled
  end
  local changed = 0
  if delta > 0 then
    filled = filled + delta
    if side == 'buy' then
      pos, buys = pos + delta, buys - delta
    else
      pos, sells = pos - delta, sells - delta
    end
    changed = 1
  end
  if final == '1' or filled >= qty then
    local rest = qty - filled
    if side == 'buy' then
      buys = buys - rest
    else
      sells = sells - rest
    end
    redis.call('HDEL', resv, coid)
    changed = 1
  elseif changed == 1 then
    redis.call('HSET', resv, coid,
      table.concat({sym, side, fmt(qty), fmt(filled), p[5], p[6] or ''}, '|'))
  end
  if changed == 1 then
    -- Not clamped here: settlements only take from the open quantities, so clamping once,
    -- when store_exposure writes them, gives the same as clamping after each.
    s.pos, s.buys, s.sells = pos, buys, sells
    if mark_arg ~= '' then
      s.mark = tonumber(mark_arg)
    end
    s.changed = true
  end
  return changed
end
