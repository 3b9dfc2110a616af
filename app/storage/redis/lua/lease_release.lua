-- Give a lease up, if it is still ours. KEYS[1] lease key; ARGV[1] holder id.
-- Returns 1 if it was ours and is gone, 0 otherwise (it lapsed and another holds it).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
