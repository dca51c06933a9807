-- usage.lua: recording usage events, shared by the usage scripts.
--
-- KEYS[1] the event ids counted (a sorted set: id -> when it is forgotten,
-- ms), KEYS[2] the account's index of keys to delete with it (the
-- idempotency index: key -> expiry ms), then the period hashes (metric ->
-- value) the events fall in. ARGV[1] now_ms, ARGV[2] the dedupe window ms,
-- ARGV[3] now as stored text.
--
-- Every event is planned first (read and checked, nothing written), then
-- commit() writes them all: a corrupt value or a total past MAX_CREDITS
-- stops or rejects before the first write, so a batch is never half
-- applied. A period hash expires at its period's end plus its retention
-- (by the caller's clock), set when written; the index lives as long as
-- its longest-lived key.

local SEEN, INDEX = KEYS[1], KEYS[2]
local NOW_MS, WINDOW, NOW_TEXT = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
-- What the planned events will write.
local pending_ids, pending_fields, pending_expires = {}, {}, {}
-- Each (key, metric) value as read or as planned; the ids of this batch.
local known, batch_ids = {}, {}

local function current(key, metric)
  local slot = key .. '\0' .. metric
  local value = known[slot]
  if value == nil then
    local stored = redis.call('HGET', key, metric)
    value = stored and stored_count(key, metric, stored) or 0
    known[slot] = value
  end
  return value, slot
end

-- Plans the event `id` (writes nothing): 'dup' when counted within the
-- window, 'overflow' when a total would pass MAX_CREDITS, else
-- 'ok|<month total>|<day total>'. A counter (`sum`) adds `value`, a gauge
-- (`max`) raises the total to it.
local function plan_event(id, metric, value, kind, month_key, month_expires, day_key, day_expires)
  if batch_ids[id] or redis.call('ZSCORE', SEEN, id) then return 'dup' end
  local parts = { { month_key, month_expires }, { day_key, day_expires } }
  local totals = {}
  for i, part in ipairs(parts) do
    local now_value, slot = current(part[1], metric)
    local total = now_value
    if kind == 'sum' then total = now_value + value elseif value > now_value then total = value end
    if total > MAX_CREDITS then return 'overflow' end
    totals[i] = { slot = slot, total = total, changed = total ~= now_value }
  end
  batch_ids[id] = true
  pending_ids[#pending_ids + 1] = id
  for i, part in ipairs(parts) do
    local key = part[1]
    known[totals[i].slot] = totals[i].total
    if totals[i].changed then
      pending_fields[key] = pending_fields[key] or {}
      pending_fields[key][metric] = totals[i].total
    end
    pending_expires[key] = part[2]
  end
  return string.format('ok|%d|%d', totals[1].total, totals[2].total)
end

-- Writes what the planned events changed: the ids, the period hashes and
-- their expiries (relative to the caller's clock, as every expiry of
-- meter), the index, and the TTLs that keep the ids and the index alive.
local function commit()
  if #pending_ids == 0 then return end
  for first = 1, #pending_ids, 500 do
    local args = {}
    for i = first, math.min(first + 499, #pending_ids) do
      args[#args + 1] = NOW_MS + WINDOW
      args[#args + 1] = pending_ids[i]
    end
    redis.call('ZADD', SEEN, unpack(args))
  end
  redis.call('PEXPIRE', SEEN, WINDOW)
  for key, fields in pairs(pending_fields) do
    local args = {}
    for metric, total in pairs(fields) do
      args[#args + 1] = metric
      args[#args + 1] = string.format('%d', total)
    end
    redis.call('HSET', key, unpack(args))
  end
  local index_until = 0
  for key, expires in pairs(pending_expires) do
    if redis.call('EXISTS', key) == 1 then
      local ttl = expires - NOW_MS
      if ttl < 1 then ttl = 1 end
      redis.call('PEXPIRE', key, ttl)
      redis.call('ZADD', INDEX, expires, key)
      if expires > index_until then index_until = expires end
    end
  end
  local ttl = redis.call('PTTL', INDEX)
  local wanted = index_until - NOW_MS
  if wanted > 0 and ttl < wanted then redis.call('PEXPIRE', INDEX, wanted) end
end

-- Forgets ids past their window; run before any id is looked up.
local function forget_seen()
  redis.call('ZREMRANGEBYSCORE', SEEN, '-inf', NOW_MS)
end
