-- Take or keep a lease. KEYS[1] lease key; ARGV[1] holder id, ARGV[2] TTL (ms).
-- Returns 1 if the caller holds the lease afterwards, 0 otherwise.
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
