-- An owner's bundle; with ARGV[3] = "1" it takes the oldest one-time prekey, which is
-- then gone for good (each handed out once, whichever relay asks).
-- With a handout limit (ARGV[4] capacity > 0, ARGV[5] refill per hour, ARGV[6] now in
-- ms), a token bucket per owner shared by every relay (`oh:<owner>`: tokens, time)
-- allows the take: an empty bucket leaves the bundle without one, as one relay's own
-- limit does (crate::opk_handouts), so N relays cannot take N times as many.
-- ARGV: prefix, owner, take, capacity, refill per hour, now_ms. Returns false if the
-- owner never published, else { signed prekey, signature, one-time prekey or "",
-- one-time prekeys left }.
local P, o = ARGV[1], ARGV[2]
local capacity, refill, now = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local bundle = redis.call('HMGET', P .. 'pk:' .. o, 'spk', 'sig')
if not bundle[1] then return false end
local opk = ''
local allowed = ARGV[3] == '1'
local bucket, tokens = P .. 'oh:' .. o, capacity
if allowed and capacity > 0 and redis.call('LLEN', P .. 'opk:' .. o) > 0 then
  local held = redis.call('HMGET', bucket, 'tokens', 'at')
  if held[1] then
    local elapsed = math.max(0, now - tonumber(held[2]))
    tokens = math.min(capacity, tonumber(held[1]) + elapsed * refill / 3600000)
  end
  allowed = tokens >= 1
end
if allowed then
  opk = redis.call('LPOP', P .. 'opk:' .. o) or ''
  if opk ~= '' then
    redis.call('SREM', P .. 'opks:' .. o, opk)
    if capacity > 0 then
      tokens = tokens - 1
      redis.call('HSET', bucket, 'tokens', tostring(tokens), 'at', string.format('%d', now))
      -- A full bucket is no different from none: it goes once it would have refilled.
      local full_in = math.ceil((capacity - tokens) * 3600000 / math.max(refill, 1))
      redis.call('PEXPIRE', bucket, math.max(full_in, 1))
    end
  end
end
return { bundle[1], bundle[2], opk, redis.call('LLEN', P .. 'opk:' .. o) }
