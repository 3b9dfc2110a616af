-- Append an account's execution reports to its stream, each under its own number as the
-- entry id (<seq>-0), skipping every one the stream already has or has passed: publishing
-- again (a repair, a retry) never duplicates or reorders.
-- KEYS[1] the account's stream; ARGV[1] approximate maximum length;
-- ARGV[2], ARGV[3], ...: seq, time in ms, report JSON, for each report in ascending seq.
local key = KEYS[1]
local top = 0
local newest = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
if #newest > 0 then
  top = tonumber(string.match(newest[1][1], '^(%d+)'))
end
local added = 0
for i = 2, #ARGV, 3 do
  local seq = tonumber(ARGV[i])
  if seq > top then
    redis.call('XADD', key, 'MAXLEN', '~', ARGV[1], seq .. '-0', 't', ARGV[i + 1], 'r', ARGV[i + 2])
    top = seq
    added = added + 1
  end
end
return added
