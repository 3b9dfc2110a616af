-- Replace the limits of an account whose state is built (otherwise the next order rebuilds
-- it from the database, which already holds these limits).
-- KEYS: risk; ARGV[1] JSON {field: value} of the limits that are set (absent: no limit)
local risk = KEYS[1]
if redis.call('HGET', risk, 'built') ~= '1' then
  return 0
end
for _, field in ipairs(redis.call('HKEYS', risk)) do
  if field == 'doc' or field == 'state' or string.sub(field, 1, 4) == 'max_'
      or string.sub(field, 1, 7) == 'maxpos:' then
    redis.call('HDEL', risk, field)
  end
end
for field, value in pairs(cjson.decode(ARGV[1])) do
  redis.call('HSET', risk, field, tostring(value))
end
return 1
