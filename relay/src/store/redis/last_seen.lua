-- When an identity was last seen (ms since the epoch), or "now" while it is connected
-- to a relay of the cluster that is alive (QueryAway must not depend on which relay
-- answers). ARGV: prefix, identity. Returns false if never seen.
local P, who = ARGV[1], ARGV[2]
local where = redis.call('HGET', P .. 'presence', who)
if where then
  local node = string.sub(where, 1, string.find(where, '\0', 1, true) - 1)
  if redis.call('EXISTS', P .. 'alive:' .. node) == 1 then return 'now' end
end
return redis.call('HGET', P .. 'seen', who)
