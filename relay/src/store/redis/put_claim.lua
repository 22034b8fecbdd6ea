-- Stores an owner's name claim if the name is free or the owner's, or its holder's
-- lease ran out (docs/PROTOCOL.md 1.8; the rule of crate::lease::Lease::expired). An
-- identity holds one name: claiming another frees the previous one.
-- ARGV: prefix, name, owner, claim, now_ms, lease_ms, the claim's issued_ms.
-- Returns "S" (stored), "H" (held by another) or "T" .. previous holder (taken over).
local P, name, owner, claim, now, lease, issued =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local outcome = 'S'
local holder = redis.call('HGET', P .. 'cl_owner', name)
if holder and holder ~= owner then
  local since = tonumber(redis.call('HGET', P .. 'cl_stored', name) or 0)
  local auth = redis.call('HGET', P .. 'auth', holder)
  if auth and tonumber(auth) > since then since = tonumber(auth) end
  if now - since <= lease then return 'H' end
  redis.call('LREM', P .. 'names:' .. holder, 0, name)
  if redis.call('LLEN', P .. 'names:' .. holder) == 0 then redis.call('HDEL', P .. 'auth', holder) end
  outcome = 'T' .. holder
end
for _, other in ipairs(redis.call('LRANGE', P .. 'names:' .. owner, 0, -1)) do
  if other ~= name then
    redis.call('HDEL', P .. 'cl', other)
    redis.call('HDEL', P .. 'cl_owner', other)
    redis.call('HDEL', P .. 'cl_stored', other)
    redis.call('HDEL', P .. 'cl_issued', other)
  end
end
redis.call('DEL', P .. 'names:' .. owner)
redis.call('RPUSH', P .. 'names:' .. owner, name)
redis.call('HSET', P .. 'cl', name, claim)
redis.call('HSET', P .. 'cl_owner', name, owner)
redis.call('HSET', P .. 'cl_stored', name, string.format('%d', now))
redis.call('HSET', P .. 'cl_issued', name, issued)
return outcome
