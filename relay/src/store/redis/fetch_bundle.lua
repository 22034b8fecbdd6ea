-- An owner's bundle; with ARGV[3] = "1" it takes the oldest one-time prekey, which is
-- then gone for good (each handed out once, whichever relay asks).
-- ARGV: prefix, owner, take. Returns false if the owner never published, else
-- { signed prekey, signature, one-time prekey or "", one-time prekeys left }.
local P, o = ARGV[1], ARGV[2]
local bundle = redis.call('HMGET', P .. 'pk:' .. o, 'spk', 'sig')
if not bundle[1] then return false end
local opk = ''
if ARGV[3] == '1' then
  opk = redis.call('LPOP', P .. 'opk:' .. o) or ''
  if opk ~= '' then redis.call('SREM', P .. 'opks:' .. o, opk) end
end
return { bundle[1], bundle[2], opk, redis.call('LLEN', P .. 'opk:' .. o) }
