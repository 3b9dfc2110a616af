-- Drop an account's reports older than a cutoff (retention by age; length is kept by
-- XADD's MAXLEN). Entries are in seq order, and their times never go back, so the first
-- entry young enough bounds the trim.
-- KEYS[1] the account's stream; ARGV[1] the cutoff, ms since the epoch. Returns the count.
local key = KEYS[1]
local cutoff = tonumber(ARGV[1])
local start = '-'
while true do
  local entries = redis.call('XRANGE', key, start, '+', 'COUNT', 256)
  if #entries == 0 then
    return redis.call('XTRIM', key, 'MAXLEN', 0)
  end
  for _, entry in ipairs(entries) do
    local fields = entry[2]
    local at = 0
    for j = 1, #fields, 2 do
      if fields[j] == 't' then at = tonumber(fields[j + 1]) end
    end
    if at >= cutoff then
      return redis.call('XTRIM', key, 'MINID', entry[1])
    end
  end
  start = '(' .. entries[#entries][1]
end
