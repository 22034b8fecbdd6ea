-- Replaces an owner's signed prekey and adds one-time prekeys, at most ARGV[5] held, a
-- prekey already held not twice. ARGV: prefix, owner, signed prekey, signature, most
-- held, one-time prekeys... Returns how many one-time prekeys are held.
local P, o, most = ARGV[1], ARGV[2], tonumber(ARGV[5])
redis.call('HSET', P .. 'pk:' .. o, 'spk', ARGV[3], 'sig', ARGV[4])
local list, set = P .. 'opk:' .. o, P .. 'opks:' .. o
for j = 6, #ARGV do
  if redis.call('LLEN', list) >= most then break end
  if redis.call('SADD', set, ARGV[j]) == 1 then redis.call('RPUSH', list, ARGV[j]) end
end
return redis.call('LLEN', list)
