-- Set a kill switch flag unless Redis already holds a newer setting.
-- KEYS: risk; ARGV: field ('kill_account' | 'kill_global'), '1' or '0', generation
-- Written even before the account's state is built: a rebuild in flight keeps the newer one.
local current = redis.call('HGET', KEYS[1], 'gen:' .. ARGV[1])
if current and tonumber(current) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], 'gen:' .. ARGV[1], ARGV[3])
return 1
