-- mutation.lua: what every mutating script shares, the caller's clock and
-- idempotency.
--
-- ARGV of every mutation starts with now_ms, now_text, fingerprint ('' when
-- the caller sent no idempotency key) and window_ms; the script's own
-- arguments follow from ARGV[5]. With a fingerprint, the last key is the
-- idempotency record: {"fp": fingerprint, "exp": expiry ms, "out": reply}.
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
  if #KEYS < 2 then
    return redis.error_reply('ERR an idempotent call needs its record as the last of at least two keys')
  end
  IDEMPOTENCY = { key = KEYS[#KEYS], fp = ARGV[3], window = tonumber(ARGV[4]) }
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

-- Remembers the reply `out` for the window. Scripts call it before their
-- other writes, once they know the outcome.
local function remember(out)
  if IDEMPOTENCY then
    local record = cjson.encode({ fp = IDEMPOTENCY.fp, exp = int(NOW_MS + IDEMPOTENCY.window), out = out })
    redis.call('SET', IDEMPOTENCY.key, record, 'PX', IDEMPOTENCY.window)
  end
end
