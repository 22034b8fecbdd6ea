-- An identity authenticated on relay node ARGV[3]: it is present there now, under a new
-- generation. If it was present on another node that is alive, that node is told over pub/sub
-- ("R" .. identity .. generation it held) to close the older connection.
-- ARGV: prefix, identity, node. Returns the new generation.
local P, who, node = ARGV[1], ARGV[2], ARGV[3]
local gen = redis.call('INCR', P .. 'presence_gen')
local before = redis.call('HGET', P .. 'presence', who)
redis.call('HSET', P .. 'presence', who, node .. '\0' .. string.format('%d', gen))
if before then
  local sep = string.find(before, '\0', 1, true)
  local old_node, old_gen = string.sub(before, 1, sep - 1), string.sub(before, sep + 1)
  if old_node ~= node and redis.call('EXISTS', P .. 'alive:' .. old_node) == 1 then
    redis.call('PUBLISH', P .. 'relay:' .. old_node, 'R' .. who .. old_gen)
  end
end
return gen
