-- The connection of generation ARGV[4] of an identity on node ARGV[3] ended: it is no
-- longer present, unless a newer connection (here or on another node) is.
-- ARGV: prefix, identity, node, generation. Returns 1 if it was removed.
local P, who = ARGV[1], ARGV[2]
if redis.call('HGET', P .. 'presence', who) == ARGV[3] .. '\0' .. ARGV[4] then
  return redis.call('HDEL', P .. 'presence', who)
end
return 0
