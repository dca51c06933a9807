-- usage.lua: recording usage events, shared by the usage scripts.
--
-- KEYS[1] the event ids counted (a sorted set: id -> when it is forgotten,
-- ms), KEYS[2] the account's index of keys to delete with it (the
-- idempotency index: key -> expiry ms), then the period hashes (metric ->
-- value) the events fall in. ARGV[1] now_ms, ARGV[2] the dedupe window ms,
-- ARGV[3] now as stored text.
-- A period hash expires at its period's end plus its retention (by the
-- caller's clock), set when written; the index lives as long as its
-- longest-lived key.

local SEEN, INDEX = KEYS[1], KEYS[2]
local NOW_MS, WINDOW, NOW_TEXT = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local index_until = 0

-- Adds (`sum`) or raises to (`max`) `metric` of the period hash `key` by
-- `value`; the hash expires at `expires` ms. Returns the new value.
local function bump(key, expires, metric, value, kind)
  local total
  if kind == 'sum' then
    total = redis.call('HINCRBY', key, metric, value)
  else
    local stored = redis.call('HGET', key, metric)
    total = stored and stored_count(key, metric, stored) or 0
    if value > total then
      total = value
      redis.call('HSET', key, metric, value)
    end
  end
  -- Relative to meterd's clock (the one every call passes in), as every
  -- expiry of meter is: Redis's own clock may differ.
  local ttl = expires - NOW_MS
  if ttl < 1 then ttl = 1 end
  redis.call('PEXPIRE', key, ttl)
  redis.call('ZADD', INDEX, expires, key)
  if expires > index_until then index_until = expires end
  return total
end

-- Counts the event `id` unless counted within the window: 'dup', or
-- 'ok|<month total>|<day total>'.
local function record_event(id, metric, value, kind, month_key, month_expires, day_key, day_expires)
  if redis.call('ZSCORE', SEEN, id) then return 'dup' end
  redis.call('ZADD', SEEN, NOW_MS + WINDOW, id)
  local month = bump(month_key, month_expires, metric, value, kind)
  local day = bump(day_key, day_expires, metric, value, kind)
  return string.format('ok|%d|%d', month, day)
end

-- Forgets ids past their window; run before counting.
local function forget_seen()
  redis.call('ZREMRANGEBYSCORE', SEEN, '-inf', NOW_MS)
end

-- Keeps the ids' set for the window and the index while its keys live.
local function keep_alive()
  redis.call('PEXPIRE', SEEN, WINDOW)
  local ttl = redis.call('PTTL', INDEX)
  local wanted = index_until - NOW_MS
  if wanted > 0 and ttl < wanted then redis.call('PEXPIRE', INDEX, wanted) end
end
