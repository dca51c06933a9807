-- mutation.lua: what every mutating script shares, the caller's clock and
-- idempotency.
--
-- ARGV of every mutation starts with now_ms, now_text, fingerprint ('' when
-- the caller sent no idempotency key) and window_ms; the script's own
-- arguments follow from ARGV[5]. With a fingerprint, the last two keys are
-- the account's index of idempotency records (a sorted set: record key ->
-- expiry ms, which keeps every record of the account enumerable, for
-- DeleteAccount) and the record itself:
-- {"fp": fingerprint, "exp": expiry ms, "out": reply}.
--
-- meterd passes the time in, so every replica and the tests share one clock;
-- now_text is the stored form 'YYYY-MM-DDTHH:MM:SS.mmmZ', fixed-width, so
-- comparing two such strings compares the instants. A record expires by
-- that clock ("exp") and, for storage, by its TTL (the same window).

local NOW_MS, NOW_TEXT = tonumber(ARGV[1]), ARGV[2]
local IDEMPOTENCY = nil
if ARGV[3] ~= '' then
  -- The record is a key of its own, after the data keys: with a single key
  -- the record would overwrite the data.
  if #KEYS < 3 then
    return redis.error_reply('ERR an idempotent call needs its index and record as the last of at least three keys')
  end
  IDEMPOTENCY = { key = KEYS[#KEYS], index = KEYS[#KEYS - 1], fp = ARGV[3], window = tonumber(ARGV[4]) }
  -- meterd caps the window at 30 days; checked here too, before any write,
  -- because SET would refuse a bad one only after the other writes.
  if not IDEMPOTENCY.window or IDEMPOTENCY.window < 1 or IDEMPOTENCY.window > 2592000000 then
    return redis.error_reply('ERR idempotency window_ms ' .. tostring(ARGV[4]) .. ' is outside 1..2592000000')
  end
end

-- The reply to give instead of running: the remembered one with its
-- `replayed` value (at position `replayed_at`) set, a `new_reply()` whose
-- status (at `status_at`) is 'conflict' for a key reused with other
-- arguments, or nil to run.
local function recall(new_reply, status_at, replayed_at)
  if not IDEMPOTENCY then return nil end
  local stored = redis.call('GET', IDEMPOTENCY.key)
  if not stored then return nil end
  local record = cjson.decode(stored)
  local expires = tonumber(record.exp)
  if expires and expires <= NOW_MS then return nil end
  if record.fp ~= IDEMPOTENCY.fp then
    local conflict = new_reply()
    conflict[status_at] = 'conflict'
    return conflict
  end
  record.out[replayed_at] = '1'
  return record.out
end

-- Remembers the reply `out` for the window, and lists the record in the
-- account's index. The index forgets a record a window after it expired
-- (by then its TTL has surely ended, unless replicas' clocks differ by more
-- than a window), and lives at least two windows after its newest record:
-- its TTL only ever grows, so a record written with a longer window (before
-- the window was shortened) stays listed while it lives.
-- Scripts call it before their other writes, once they know the outcome.
local function remember(out)
  if IDEMPOTENCY then
    local expires = int(NOW_MS + IDEMPOTENCY.window)
    local record = cjson.encode({ fp = IDEMPOTENCY.fp, exp = expires, out = out })
    redis.call('SET', IDEMPOTENCY.key, record, 'PX', IDEMPOTENCY.window)
    redis.call('ZADD', IDEMPOTENCY.index, expires, IDEMPOTENCY.key)
    redis.call('ZREMRANGEBYSCORE', IDEMPOTENCY.index, '-inf', '(' .. int(NOW_MS - IDEMPOTENCY.window))
    local keep = 2 * IDEMPOTENCY.window
    local ttl = redis.call('PTTL', IDEMPOTENCY.index)
    if ttl < keep then redis.call('PEXPIRE', IDEMPOTENCY.index, keep) end
  end
end
