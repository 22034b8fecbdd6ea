-- Applies a batch of writes atomically, in order (relay/src/store/redis/mod.rs, the
-- key layout is documented there). KEYS[1] is the sequence counter, whose hash tag puts
-- the script on the deployment's slot.
-- ARGV: prefix, this relay's node name, quotas (queue, sender_messages, sender_bytes,
-- stored_bytes; -1 = unlimited), the groups the batch's group writes were worked out
-- against (a count, then per group: group id, its record as read, "" if none), then
-- the operations:
--   "A" recipient sender msg_id timestamp_ms payload   store a message
--   "K" recipient sender msg_id                        acknowledge it
--   "S" identity at_ms precision_ms                    seen
--   "E" before_ms acked_before_ms notices_before_ms    expire
--   "N" sender through                                 read expiry notices
--   "G" group_id sender msg_id timestamp_ms message welcome copies record log_epoch
--       log_dropped                                    a group write's effects
-- A group write's outcome is decided by the relay (store::group::apply_group_write,
-- over the records it read); this script applies its effects: the copies (each
-- `kind recipient fan_out_id`, 49 bytes, kind "m" for the message, "w" for the
-- welcome), stored as "A" stores a message but outside the quotas; the group's new
-- record (none if ""), and the commit log entry for log_epoch (none if ""), dropping
-- the one for log_dropped (none if "").
-- Returns { "R" } and writes nothing when a group's record is no longer the one the
-- relay read (another relay's commit came first: the relay works the batch out again).
-- Else one string per operation: "A:<seq>", "D" (duplicate), "I" (id reused),
-- "Q:<quota>", "K:0"/"K:1", "S", "X:<expired>", "N:<removed>", "G:<copies>" (per copy,
-- comma-separated: its seq, "D" or "I"); then "T:<messages>", the unacknowledged
-- messages held in all.
local P, me = ARGV[1], ARGV[2]
local q_queue, q_msgs, q_bytes, q_stored =
  tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local OVERHEAD = 128
-- Most messages, acknowledged ids and notices one expiry pass removes, each.
local EXPIRE_STEP = 10000

local function num(v) return tonumber(v or 0) or 0 end
local function int(n) return string.format('%d', n) end

-- The record of a message id (key = sender .. msg_id) in `k`: "u" .. recipient ..
-- "seq:time:size" while unacknowledged, "a" .. recipient once acknowledged. Returns
-- state, recipient, seq, time, size (the last three for "u" only), or nil.
local function record(key)
  local rec = redis.call('HGET', P .. 'k', key)
  if not rec then return nil end
  local state, r = string.sub(rec, 1, 1), string.sub(rec, 2, 33)
  if state ~= 'u' then return state, r end
  local seq, ts, size = string.match(string.sub(rec, 34), '^(%d+):(%d+):(%d+)$')
  return state, r, tonumber(seq), tonumber(ts), tonumber(size)
end

-- Counters are read once per batch and written back once at its end (fewer Redis
-- calls per message; the script is atomic, so nothing else changes them meanwhile):
-- each sender's usage, the total, each recipient's queue length, the sequence number.
local senders = {}      -- sender -> { m = messages, b = bytes }
local queues = {}       -- recipient -> queue length
local total = nil       -- { m = messages, b = bytes }
local next_seq = nil

local function usage_of(sender)
  local u = senders[sender]
  if not u then
    local got = redis.call('HMGET', P .. 'su', sender .. 'm', sender .. 'b')
    u = { m = num(got[1]), b = num(got[2]) }
    senders[sender] = u
  end
  return u
end

local function total_usage()
  if not total then
    local got = redis.call('HMGET', P .. 'tot', 'm', 'b')
    total = { m = num(got[1]), b = num(got[2]) }
  end
  return total
end

local function queue_len(r)
  local n = queues[r]
  if not n then
    n = redis.call('ZCARD', P .. 'q:' .. r)
    queues[r] = n
  end
  return n
end

-- Counts a message of `size` on (delta 1) or off (delta -1) its sender, the total and
-- its recipient's queue.
local function count(sender, r, size, delta)
  local u, t = usage_of(sender), total_usage()
  u.m, u.b = u.m + delta, u.b + delta * size
  t.m, t.b = t.m + delta, t.b + delta * size
  queues[r] = queue_len(r) + delta
end

-- Removes an unacknowledged message from its recipient's queue and the expiry index.
local function unstore(r, key, size)
  redis.call('ZREM', P .. 'q:' .. r, key)
  redis.call('HDEL', P .. 'm:' .. r, key)
  redis.call('ZREM', P .. 'x', key)
  count(string.sub(key, 1, 32), r, size, -1)
end

-- The node that holds recipient r's connection if it is another one and alive, else
-- false; looked up once per recipient and node per batch.
local remote = {}
local alive = {}
local function remote_node(r)
  local node = remote[r]
  if node == nil then
    node = false
    local where = redis.call('HGET', P .. 'presence', r)
    if where then
      local name = string.sub(where, 1, string.find(where, '\0', 1, true) - 1)
      if name ~= me then
        if alive[name] == nil then
          alive[name] = redis.call('EXISTS', P .. 'alive:' .. name) == 1
        end
        if alive[name] then node = name end
      end
    end
    remote[r] = node
  end
  return node
end

-- Writes the counters back.
local function write_counters()
  for sender, u in pairs(senders) do
    if u.m <= 0 then
      redis.call('HDEL', P .. 'su', sender .. 'm', sender .. 'b')
    else
      redis.call('HSET', P .. 'su', sender .. 'm', int(u.m), sender .. 'b', int(u.b))
    end
  end
  if total then
    redis.call('HSET', P .. 'tot', 'm', int(total.m), 'b', int(total.b))
  end
  if next_seq then
    redis.call('SET', P .. 'seq', int(next_seq))
  end
end

local notify = {}

-- Stores a message for recipient r (within the quotas when `bounded`); returns its
-- answer: "A:<seq>", "D", "I" or "Q:<quota>".
local function append(r, s, id, ts, payload, bounded)
  local key = s .. id
  local state, earlier = record(key)
  if state then
    return (earlier == r) and 'D' or 'I'
  end
  local size = #payload + OVERHEAD
  if bounded then
    local qlen = queue_len(r)
    local usage = usage_of(s)
    local smsgs, sbytes = usage.m, usage.b
    local stored = total_usage().b
    if q_queue >= 0 and qlen >= q_queue then return 'Q:recipient_queue'
    elseif q_msgs >= 0 and smsgs >= q_msgs then return 'Q:sender_messages'
    elseif q_bytes >= 0 and sbytes + size > q_bytes then return 'Q:sender_bytes'
    elseif q_stored >= 0 and stored + size > q_stored then return 'Q:storage_budget'
    end
  end
  next_seq = (next_seq or num(redis.call('GET', P .. 'seq'))) + 1
  local seq = next_seq
  redis.call('ZADD', P .. 'q:' .. r, seq, key)
  redis.call('HSET', P .. 'm:' .. r, key, payload)
  redis.call('HSET', P .. 'k', key, 'u' .. r .. int(seq) .. ':' .. int(ts) .. ':' .. int(size))
  redis.call('ZADD', P .. 'x', ts, key)
  count(s, r, size, 1)
  -- The message itself to the node that holds the recipient's connection, if
  -- another and alive (presence: "<node>\0<generation>", see
  -- presence_arrive.lua; a node is alive while its heartbeat key lives).
  local node = remote_node(r)
  if node then
    notify[#notify + 1] = { node, 'D' .. r .. key .. int(seq) .. ':' .. int(ts) .. ':' .. payload }
  end
  return 'A:' .. int(seq)
end

-- The groups the relay read: all as it read them, or nothing is written.
local watched = tonumber(ARGV[7])
for w = 0, watched - 1 do
  local group, expected = ARGV[8 + 2 * w], ARGV[9 + 2 * w]
  if (redis.call('GET', P .. 'g:' .. group) or '') ~= expected then
    return { 'R' }
  end
end

local out = {}
local i = 8 + 2 * watched
while i <= #ARGV do
  local op = ARGV[i]
  if op == 'A' then
    local r, s, id, ts, payload = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], tonumber(ARGV[i + 4]), ARGV[i + 5]
    i = i + 6
    out[#out + 1] = append(r, s, id, ts, payload, true)
  elseif op == 'G' then
    local group, s, id, ts, message, welcome, copies, rec, log_epoch, log_dropped =
      ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], tonumber(ARGV[i + 4]), ARGV[i + 5], ARGV[i + 6],
      ARGV[i + 7], ARGV[i + 8], ARGV[i + 9], ARGV[i + 10]
    i = i + 11
    local answers = {}
    for c = 1, #copies, 49 do
      local payload = (string.sub(copies, c, c) == 'w') and welcome or message
      local r, copy_id = string.sub(copies, c + 1, c + 32), string.sub(copies, c + 33, c + 48)
      local answer = append(r, s, copy_id, ts, payload, false)
      answers[#answers + 1] = (string.sub(answer, 1, 2) == 'A:') and string.sub(answer, 3) or answer
    end
    if rec ~= '' then
      redis.call('SET', P .. 'g:' .. group, rec)
    end
    if log_epoch ~= '' then
      redis.call('HSET', P .. 'gl:' .. group, log_epoch, s .. id .. message)
    end
    if log_dropped ~= '' then
      redis.call('HDEL', P .. 'gl:' .. group, log_dropped)
    end
    out[#out + 1] = 'G:' .. table.concat(answers, ',')
  elseif op == 'K' then
    local r, s, id = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    i = i + 4
    local key = s .. id
    local state, held, _, ts, size = record(key)
    if state == 'u' and held == r then
      unstore(r, key, size)
      redis.call('HSET', P .. 'k', key, 'a' .. r)
      redis.call('ZADD', P .. 'ax', ts, key)
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
      local state, r, seq, ts, size = record(key)
      if state == 'u' then
        unstore(r, key, size)
        -- Forgotten: a retransmission of an expired message is a new message.
        redis.call('HDEL', P .. 'k', key)
        dropped[#dropped + 1] = { seq, key, r, ts }
      else
        redis.call('ZREM', P .. 'x', key)
      end
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
      local rec = redis.call('HGET', P .. 'k', key)
      if rec and string.sub(rec, 1, 1) == 'a' then
        redis.call('HDEL', P .. 'k', key)
      end
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
    write_counters()
    return redis.error_reply('unknown store operation ' .. tostring(op))
  end
end

write_counters()
-- Last: how many messages the whole deployment holds (for every relay's gauge).
out[#out + 1] = 'T:' .. int(total_usage().m)

-- Each message stored for a recipient connected to another node, to that node, in
-- store order.
for _, n in ipairs(notify) do
  redis.call('PUBLISH', P .. 'relay:' .. n[1], n[2])
end
return out
