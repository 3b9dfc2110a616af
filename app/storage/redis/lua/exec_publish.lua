-- Append an account's execution reports to its stream in their order, each under its own
-- number as the entry id (<seq>-0), so that the stream holds them with no hole.
--
-- One publisher sends them in order, but while its lease changes hands two may publish at
-- once, in whatever order their publishes reach Redis: a report numbered beyond the next
-- one is held (in a hash beside the stream) until the ones before it arrive, then appended
-- with them. A report the
-- stream has passed is skipped, so publishing again (a retry, a repair) never duplicates.
-- A stream that does not exist (never written, or Redis came back empty) starts at the
-- first report given; so does a repair (ARGV[2] = 1), which may jump over a hole too old
-- to fill (subscribers read those reports from the order log).
--
-- KEYS[1] the account's stream, KEYS[2] its held reports; ARGV[1] approximate maximum
-- length; ARGV[2] 1 for a repair, else 0; ARGV[3], ARGV[4], ARGV[5], ...: seq, time in ms,
-- report JSON, for each report in ascending seq. Returns the count appended.
local stream, held = KEYS[1], KEYS[2]
local maxlen = ARGV[1]
local repair = ARGV[2] == '1'

local function seq_of(id)
  return tonumber(string.match(id, '^(%d+)'))
end

local top = nil
local newest = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
if #newest > 0 then
  top = seq_of(newest[1][1])
elseif redis.call('EXISTS', stream) == 1 then
  -- Emptied by trimming: it still knows the last id it gave.
  local info = redis.call('XINFO', 'STREAM', stream)
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then top = seq_of(info[i + 1]) end
  end
end

local added = 0
local function append(seq, at, report)
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, seq .. '-0', 't', at, 'r', report)
  top = seq
  added = added + 1
end

for i = 3, #ARGV, 3 do
  local seq = tonumber(ARGV[i])
  if top == nil or seq == top + 1 or (repair and seq > top + 1 and added == 0) then
    append(seq, ARGV[i + 1], ARGV[i + 2])
  elseif seq > top + 1 then
    redis.call('HSET', held, seq, ARGV[i + 1] .. ' ' .. ARGV[i + 2])
    redis.call('EXPIRE', held, 3600)
  end
  -- What was held for right after it.
  while top ~= nil do
    local waiting = redis.call('HGET', held, top + 1)
    if not waiting then break end
    redis.call('HDEL', held, top + 1)
    local space = string.find(waiting, ' ', 1, true)
    append(top + 1, string.sub(waiting, 1, space - 1), string.sub(waiting, space + 1))
  end
end
-- Held reports the stream has now passed are dropped.
if top ~= nil and redis.call('HLEN', held) > 0 then
  for _, seq in ipairs(redis.call('HKEYS', held)) do
    if tonumber(seq) <= top then redis.call('HDEL', held, seq) end
  end
end
return added
