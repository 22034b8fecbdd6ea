-- Takes an owner's oldest one-time KeyPackage (gone for good, whichever relay asks) or,
-- when none is left, a copy of its last-resort one. ARGV: prefix, owner.
-- Returns false if it has neither, else { package, one-time KeyPackages left }.
local P, o = ARGV[1], ARGV[2]
local list = P .. 'kp:' .. o
local package = redis.call('LPOP', list)
if not package then
  package = redis.call('GET', P .. 'kpl:' .. o)
  if not package then return false end
end
return { package, redis.call('LLEN', list) }
