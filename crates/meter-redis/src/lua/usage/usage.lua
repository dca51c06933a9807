-- usage.lua: recording usage events, shared by the usage scripts.
--
-- KEYS[1] the event ids counted (a sorted set: id -> when it is forgotten,
-- ms), KEYS[2] the account's index of keys to delete with it (the
-- idempotency index: key -> expiry ms), KEYS[3] the rankings the account is
-- in (a sorted set: ranking key -> expiry ms, for DeleteAccount), KEYS[4]
-- the event log (a stream), then each script's own keys.
-- ARGV[1] now_ms, ARGV[2] the dedupe window ms, ARGV[3] now as stored
-- text, ARGV[4] the account id, ARGV[5] the most entries the log shows,
-- ARGV[6] how long the log keeps an entry (ms), ARGV[7] how many rankings
-- the events touch, then per ranking its key and its position in KEYS (0
-- when it is not there: on Redis Cluster a ranking lives in another slot,
-- and meterd raises it after the script with usage/top.lua). Each
-- script's own arguments start at ARGS = 8 + 2 × rankings.
--
-- Every event is planned first (read and checked, nothing written), then
-- commit() writes them all: a corrupt value or a total past MAX_CREDITS
-- stops or rejects before the first write, so a batch is never half
-- applied. A period hash (and its rankings) expires at its period's end
-- plus its retention (by the caller's clock), set when written; the index
-- and the list of rankings live as long as their longest-lived entry.

local SEEN, INDEX, RANKS, LOG = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local NOW_MS, WINDOW, NOW_TEXT = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local ACCOUNT, LOG_MAX, LOG_AGE = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local TOPS = {}
for t = 1, tonumber(ARGV[7]) do
  TOPS[t] = { key = ARGV[6 + 2 * t], at = tonumber(ARGV[7 + 2 * t]) }
end
local ARGS = 8 + 2 * #TOPS
-- What the planned events will write.
local pending_ids, pending_fields, pending_expires = {}, {}, {}
local pending_tops, pending_log = {}, {}
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
-- (`max`) raises the total to it. `month_top` and `day_top` are the
-- rankings' numbers in TOPS; `meta` ('' for none) puts the event in the
-- log, with its time `time_ms`.
local function plan_event(id, metric, value, kind, month_key, month_expires, day_key, day_expires,
                          month_top, day_top, meta, time_ms)
  if batch_ids[id] or redis.call('ZSCORE', SEEN, id) then return 'dup' end
  local parts = { { month_key, month_expires, month_top }, { day_key, day_expires, day_top } }
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
    local key, total = part[1], totals[i].total
    known[totals[i].slot] = total
    if totals[i].changed then
      pending_fields[key] = pending_fields[key] or {}
      pending_fields[key][metric] = total
    end
    pending_expires[key] = part[2]
    if total > 0 then pending_tops[part[3]] = { total, part[2] } end
  end
  if meta ~= '' then
    pending_log[#pending_log + 1] = string.format('%s|%s|%d|%s', id, metric, value, time_ms)
    pending_log[#pending_log + 1] = meta
  end
  return string.format('ok|%d|%d', totals[1].total, totals[2].total)
end

-- Keeps `key` (a sorted set of keys by expiry ms) alive as long as its
-- longest-lived entry, `until_ms` at the latest.
local function keep_listing(key, until_ms)
  local wanted = until_ms - NOW_MS
  if wanted > 0 and redis.call('PTTL', key) < wanted then redis.call('PEXPIRE', key, wanted) end
end

-- Appends the planned log entries, ids by the caller's clock (one that
-- went back continues after the newest entry), trimmed to about LOG_MAX.
local function append_log()
  local id = int(NOW_MS) .. '-*'
  for i = 1, #pending_log, 2 do
    local added = redis.pcall('XADD', LOG, 'MAXLEN', '~', LOG_MAX, id, 'e', pending_log[i], 'm',
      pending_log[i + 1])
    if type(added) == 'table' and added.err then
      local top = redis.call('XREVRANGE', LOG, '+', '-', 'COUNT', 1)[1][1]
      id = string.match(top, '^(%d+)-') .. '-*'
      redis.call('XADD', LOG, 'MAXLEN', '~', LOG_MAX, id, 'e', pending_log[i], 'm', pending_log[i + 1])
    end
  end
  redis.call('PEXPIRE', LOG, LOG_AGE)
end

-- Writes what the planned events changed: the ids, the period hashes and
-- their expiries (relative to the caller's clock, as every expiry of
-- meter), the index, the rankings, the log, and the TTLs that keep them.
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
  keep_listing(INDEX, index_until)
  local ranks_until = 0
  for t, top in pairs(pending_tops) do
    local ranking, expires = TOPS[t], top[2]
    local ttl = expires - NOW_MS
    if ttl >= 1 then
      redis.call('ZADD', RANKS, expires, ranking.key)
      if expires > ranks_until then ranks_until = expires end
      if ranking.at > 0 then
        local key = KEYS[ranking.at]
        redis.call('ZADD', key, 'GT', string.format('%d', top[1]), ACCOUNT)
        if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
      end
    end
  end
  if ranks_until > 0 then
    redis.call('ZREMRANGEBYSCORE', RANKS, '-inf', NOW_MS)
    keep_listing(RANKS, ranks_until)
  end
  if #pending_log > 0 then append_log() end
end

-- Forgets ids past their window; run before any id is looked up.
local function forget_seen()
  redis.call('ZREMRANGEBYSCORE', SEEN, '-inf', NOW_MS)
end
