-- Takes an owner's oldest one-time KeyPackage (gone for good, whichever relay asks) when
-- ARGV[3] is '1' and one is left, else a copy of its last-resort one.
-- ARGV: prefix, owner, one_time ('1' or '0').
-- Returns false if there is neither, else { package, one-time KeyPackages left, 1 for a
-- one-time KeyPackage or 0 for the last-resort one }.
local P, o, one_time = ARGV[1], ARGV[2], ARGV[3]
local list = P .. 'kp:' .. o
local package = false
if one_time == '1' then package = redis.call('LPOP', list) end
if package then return { package, redis.call('LLEN', list), 1 } end
package = redis.call('GET', P .. 'kpl:' .. o)
if not package then return false end
return { package, redis.call('LLEN', list), 0 }
