-- Applies a batch of writes atomically, in order (relay/src/store/redis/mod.rs, the
-- key layout is documented there). KEYS[1] is the sequence counter, whose hash tag puts
-- the script on the deployment's slot.
-- ARGV: prefix, this relay's node name, quotas (queue, sender_messages, sender_bytes,
-- stored_bytes; -1 = unlimited), then the operations:
--   "A" recipient sender msg_id timestamp_ms payload   store a message
--   "K" recipient sender msg_id                        acknowledge it
--   "S" identity at_ms precision_ms                    seen
--   "E" before_ms acked_before_ms notices_before_ms    expire
--   "N" sender through                                 read expiry notices
-- Returns one string per operation: "A:<seq>", "D" (duplicate), "I" (id reused),
-- "Q:<quota>", "K:0"/"K:1", "S", "X:<expired>", "N:<removed>".
local P, me = ARGV[1], ARGV[2]
local q_queue, q_msgs, q_bytes, q_stored =
  tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local OVERHEAD = 128
-- Most messages, acknowledged ids and notices one expiry pass removes, each.
local EXPIRE_STEP = 10000

local function num(v) return tonumber(v or 0) or 0 end
local function int(n) return string.format('%d', n) end

-- Counts a removed message off its sender's usage and the total.
local function uncount(sender, size)
  local left = redis.call('HINCRBY', P .. 'us', sender, -1)
  if left <= 0 then
    redis.call('HDEL', P .. 'us', sender)
    redis.call('HDEL', P .. 'ub', sender)
  else
    redis.call('HINCRBY', P .. 'ub', sender, -size)
  end
  redis.call('HINCRBY', P .. 'tot', 'm', -1)
  redis.call('HINCRBY', P .. 'tot', 'b', -size)
end

-- Removes a stored message (key = sender .. msg_id) from its recipient's queue;
-- returns its sequence number, timestamp and payload size, or nil.
local function unstore(recipient, key)
  local seq = redis.call('ZSCORE', P .. 'q:' .. recipient, key)
  if not seq then return nil end
  local ts = num(redis.call('HGET', P .. 't:' .. recipient, key))
  local len = redis.call('HSTRLEN', P .. 'm:' .. recipient, key)
  redis.call('ZREM', P .. 'q:' .. recipient, key)
  redis.call('HDEL', P .. 'm:' .. recipient, key)
  redis.call('HDEL', P .. 't:' .. recipient, key)
  redis.call('HDEL', P .. 'u', key)
  redis.call('ZREM', P .. 'x', key)
  uncount(string.sub(key, 1, 32), len + OVERHEAD)
  return tonumber(seq), ts, len
end

local notify = {}
local out = {}
local i = 7
while i <= #ARGV do
  local op = ARGV[i]
  if op == 'A' then
    local r, s, id, ts, payload = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], tonumber(ARGV[i + 4]), ARGV[i + 5]
    i = i + 6
    local key = s .. id
    local earlier = redis.call('HGET', P .. 'a', key) or redis.call('HGET', P .. 'u', key)
    if earlier then
      out[#out + 1] = (earlier == r) and 'D' or 'I'
    else
      local size = #payload + OVERHEAD
      local qlen = redis.call('ZCARD', P .. 'q:' .. r)
      local smsgs = num(redis.call('HGET', P .. 'us', s))
      local sbytes = num(redis.call('HGET', P .. 'ub', s))
      local stored = num(redis.call('HGET', P .. 'tot', 'b'))
      local refused = nil
      if q_queue >= 0 and qlen >= q_queue then refused = 'recipient_queue'
      elseif q_msgs >= 0 and smsgs >= q_msgs then refused = 'sender_messages'
      elseif q_bytes >= 0 and sbytes + size > q_bytes then refused = 'sender_bytes'
      elseif q_stored >= 0 and stored + size > q_stored then refused = 'storage_budget'
      end
      if refused then
        out[#out + 1] = 'Q:' .. refused
      else
        local seq = redis.call('INCR', P .. 'seq')
        redis.call('ZADD', P .. 'q:' .. r, seq, key)
        redis.call('HSET', P .. 'm:' .. r, key, payload)
        redis.call('HSET', P .. 't:' .. r, key, int(ts))
        redis.call('HSET', P .. 'u', key, r)
        redis.call('ZADD', P .. 'x', ts, key)
        redis.call('HINCRBY', P .. 'us', s, 1)
        redis.call('HINCRBY', P .. 'ub', s, size)
        redis.call('HINCRBY', P .. 'tot', 'm', 1)
        redis.call('HINCRBY', P .. 'tot', 'b', size)
        -- The message itself to the node that holds the recipient's connection, if
        -- another and alive (presence: "<node>\0<generation>", see
        -- presence_arrive.lua; a node is alive while its heartbeat key lives).
        local where = redis.call('HGET', P .. 'presence', r)
        if where then
          local node = string.sub(where, 1, string.find(where, '\0', 1, true) - 1)
          if node ~= me and redis.call('EXISTS', P .. 'alive:' .. node) == 1 then
            notify[#notify + 1] = { node, 'D' .. r .. key .. int(seq) .. ':' .. int(ts) .. ':' .. payload }
          end
        end
        out[#out + 1] = 'A:' .. int(seq)
      end
    end
  elseif op == 'K' then
    local r, s, id = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    i = i + 4
    local key = s .. id
    if redis.call('HGET', P .. 'u', key) == r then
      local _, ts = unstore(r, key)
      redis.call('HDEL', P .. 'u', key)
      redis.call('HSET', P .. 'a', key, r)
      redis.call('ZADD', P .. 'ax', ts or 0, key)
      out[#out + 1] = 'K:1'
    else
      out[#out + 1] = 'K:0'
    end
  elseif op == 'S' then
    local who, at, precision = ARGV[i + 1], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
    i = i + 4
    local seen = redis.call('HGET', P .. 'seen', who)
    if (not seen) or tonumber(seen) < at - precision then
      redis.call('HSET', P .. 'seen', who, int(at))
    end
    out[#out + 1] = 'S'
  elseif op == 'E' then
    local before, acked_before, notices_before = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    i = i + 4
    -- At most EXPIRE_STEP of each kind per pass, so that one script never holds Redis
    -- for long; the relay's next pass (at most a minute later) takes the rest.
    -- Unacknowledged messages past the TTL: dropped, each an expiry notice for its
    -- sender, in store order.
    local dropped = {}
    local due = redis.call('ZRANGEBYSCORE', P .. 'x', '-inf', '(' .. before, 'LIMIT', 0, EXPIRE_STEP)
    for _, key in ipairs(due) do
      local r = redis.call('HGET', P .. 'u', key)
      if r then
        local seq, ts = unstore(r, key)
        if seq then dropped[#dropped + 1] = { seq, key, r, ts } end
      end
      redis.call('ZREM', P .. 'x', key)
    end
    table.sort(dropped, function(a, b) return a[1] < b[1] end)
    for _, d in ipairs(dropped) do
      local key, r, ts = d[2], d[3], d[4]
      local s = string.sub(key, 1, 32)
      local nseq = int(redis.call('INCR', P .. 'nseq'))
      redis.call('ZADD', P .. 'n:' .. s, nseq, r .. string.sub(key, 33, 48) .. nseq)
      redis.call('ZADD', P .. 'nt', ts, s .. nseq)
    end
    -- Acknowledged ids past the deduplication window are forgotten.
    local forgotten = redis.call('ZRANGEBYSCORE', P .. 'ax', '-inf', '(' .. acked_before, 'LIMIT', 0, EXPIRE_STEP)
    for _, key in ipairs(forgotten) do
      redis.call('HDEL', P .. 'a', key)
      redis.call('ZREM', P .. 'ax', key)
    end
    -- Notices left unread past their own cut-off.
    local stale = redis.call('ZRANGEBYSCORE', P .. 'nt', '-inf', '(' .. notices_before, 'LIMIT', 0, EXPIRE_STEP)
    for _, member in ipairs(stale) do
      local nseq = string.sub(member, 33)
      redis.call('ZREMRANGEBYSCORE', P .. 'n:' .. string.sub(member, 1, 32), nseq, nseq)
      redis.call('ZREM', P .. 'nt', member)
    end
    out[#out + 1] = 'X:' .. int(#dropped)
  elseif op == 'N' then
    local s, through = ARGV[i + 1], ARGV[i + 2]
    i = i + 3
    local read = redis.call('ZRANGEBYSCORE', P .. 'n:' .. s, '-inf', through, 'WITHSCORES')
    for j = 2, #read, 2 do
      redis.call('ZREM', P .. 'nt', s .. read[j])
    end
    redis.call('ZREMRANGEBYSCORE', P .. 'n:' .. s, '-inf', through)
    out[#out + 1] = 'N:' .. int(#read / 2)
  else
    return redis.error_reply('unknown store operation ' .. tostring(op))
  end
end

-- Each message stored for a recipient connected to another node, to that node, in
-- store order.
for _, n in ipairs(notify) do
  redis.call('PUBLISH', P .. 'relay:' .. n[1], n[2])
end
return out
