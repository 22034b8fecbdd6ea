-- Deletes an owner's claim of a name given a verified release issued at ARGV[4]: only
-- if the owner holds the name and the stored claim was not issued after the release.
-- ARGV: prefix, name, owner, issued_ms. Returns "R" (released), "N" (not held) or
-- "O" .. the stored claim's issued_ms (the release is older).
local P, name, owner, issued = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
-- a < b for decimal strings without leading zeros, exact for any u64 (a Lua number
-- is a double: above 2^53 it would round).
local function less(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
if redis.call('HGET', P .. 'cl_owner', name) ~= owner then return 'N' end
local claim_issued = redis.call('HGET', P .. 'cl_issued', name) or '0'
if less(issued, claim_issued) then return 'O' .. claim_issued end
redis.call('HDEL', P .. 'cl', name)
redis.call('HDEL', P .. 'cl_owner', name)
redis.call('HDEL', P .. 'cl_stored', name)
redis.call('HDEL', P .. 'cl_issued', name)
redis.call('LREM', P .. 'names:' .. owner, 0, name)
if redis.call('LLEN', P .. 'names:' .. owner) == 0 then redis.call('HDEL', P .. 'auth', owner) end
return 'R'
