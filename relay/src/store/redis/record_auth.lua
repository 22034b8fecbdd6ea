-- Records that an identity that holds a name authenticated (for its lease); an identity
-- that holds none has nothing to record. ARGV: prefix, identity, at_ms.
local P, who, at = ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call('LLEN', P .. 'names:' .. who) == 0 then return 0 end
local before = redis.call('HGET', P .. 'auth', who)
if (not before) or tonumber(before) < at then
  redis.call('HSET', P .. 'auth', who, string.format('%d', at))
end
return 1
