-- Adds an owner's one-time KeyPackages, at most ARGV[3] held (the rest are dropped),
-- and with ARGV[4] = "1" replaces its last-resort KeyPackage by ARGV[5].
-- ARGV: prefix, owner, most held, "1"/"0", last resort (or ""), one-time packages...
-- Returns how many one-time KeyPackages are held.
local P, o, most = ARGV[1], ARGV[2], tonumber(ARGV[3])
local list = P .. 'kp:' .. o
for j = 6, #ARGV do
  if redis.call('LLEN', list) >= most then break end
  redis.call('RPUSH', list, ARGV[j])
end
if ARGV[4] == '1' then
  redis.call('SET', P .. 'kpl:' .. o, ARGV[5])
end
return redis.call('LLEN', list)
