-- Up to ARGV[4] unacknowledged messages of a recipient with a sequence number above
-- ARGV[3], in order, not older than ARGV[5] (ms since the epoch).
-- ARGV: prefix, recipient, after, limit, not_before_ms.
-- Returns a flat array: seq, sender .. msg_id, timestamp_ms, payload, ...
local P, r, after, limit, not_before = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local out, n, from = {}, 0, '(' .. after
while n < limit do
  local page = redis.call('ZRANGEBYSCORE', P .. 'q:' .. r, from, '+inf', 'WITHSCORES', 'LIMIT', 0, limit - n)
  if #page == 0 then break end
  for j = 1, #page, 2 do
    local key, seq = page[j], page[j + 1]
    -- The message's record in `k` (commit.lua): "u" .. recipient .. "seq:time:size".
    local rec = redis.call('HGET', P .. 'k', key) or ''
    local ts = tonumber(string.match(string.sub(rec, 34), '^%d+:(%d+):') or 0)
    if ts >= not_before then
      out[#out + 1] = seq
      out[#out + 1] = key
      out[#out + 1] = string.format('%d', ts)
      out[#out + 1] = redis.call('HGET', P .. 'm:' .. r, key) or ''
      n = n + 1
    end
    from = '(' .. seq
  end
end
return out
