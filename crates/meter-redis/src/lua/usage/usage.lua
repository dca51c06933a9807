-- usage.lua: recording usage events, shared by the usage scripts.
--
-- KEYS[1] the event ids counted (a sorted set: id -> when it is forgotten,
-- ms), KEYS[2] the account's index of keys to delete with it (the
-- idempotency index: key -> expiry ms), KEYS[3] the event log (a
-- stream), then each script's own keys.
-- ARGV[1] now_ms, ARGV[2] the dedupe window ms, ARGV[3] now as stored
-- text, ARGV[4] the account id, ARGV[5] the most entries the log shows,
-- ARGV[6] how long the log keeps an entry (ms), ARGV[7] how many rankings
-- the events touch, then per ranking its position in KEYS (0 when it is
-- not there: on Redis Cluster a ranking lives in another slot, and meterd
-- raises it after the script with usage/top.lua). Each script's own
-- arguments start at ARGS = 8 + rankings.
--
-- Every event is planned first (read and checked, nothing written), then
-- commit() writes them all: a corrupt value or a total past MAX_CREDITS
-- stops or rejects before the first write, so a batch is never half
-- applied. A period hash (and its rankings) expires at its period's end
-- plus its retention (by the caller's clock), set when written; the index
-- lives as long as its longest-lived entry. DeleteAccount finds the
-- rankings an account is in from its period hashes: a ranking of
-- (metric, period) exists where the period hash has the metric.

local SEEN, INDEX, LOG = KEYS[1], KEYS[2], KEYS[3]
local NOW_MS, WINDOW, NOW_TEXT = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local ACCOUNT, LOG_MAX, LOG_AGE = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local TOPS = tonumber(ARGV[7])
local ARGS = 8 + TOPS
-- What the planned events will write: ids, fields by key, expiries by key,
-- each ranking's new total and expiry by its number, log entries.
local pending_ids, pending_fields, pending_expires = {}, {}, {}
local top_total, top_expires, pending_log = {}, {}, {}
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

-- The total of `metric` in `key` after an event of `value`: a counter
-- (`sum`) adds it, a gauge (`max`) raises the total to it; with the total
-- before and its slot in `known`.
local function planned_total(key, metric, value, kind)
  local was, slot = current(key, metric)
  local total = was
  if kind == 'sum' then total = was + value elseif value > was then total = value end
  return total, was, slot
end

-- Keeps a planned total of `metric` in `key` (its period's ranking number `top`).
local function keep_total(key, metric, total, was, slot, expires, top)
  known[slot] = total
  if total ~= was then
    local fields = pending_fields[key]
    if not fields then
      fields = {}
      pending_fields[key] = fields
    end
    fields[metric] = total
  end
  pending_expires[key] = expires
  if total > 0 then top_total[top], top_expires[top] = total, expires end
end

-- Plans the event `id` (writes nothing): 'dup|<month total>|<day total>'
-- when counted within the window (the totals as they stand, so meterd
-- can raise a ranking a failure left behind), 'overflow' when a total
-- would pass MAX_CREDITS, else 'ok|<month total>|<day total>'.
-- `month_top` and `day_top` are the periods' ranking numbers; `meta` (''
-- for none) puts the event in the log, with its time `time_ms`.
local function plan_event(id, metric, value, kind, month_key, month_expires, day_key, day_expires,
                          month_top, day_top, meta, time_ms)
  if batch_ids[id] or redis.call('ZSCORE', SEEN, id) then
    return string.format('dup|%d|%d', current(month_key, metric), current(day_key, metric))
  end
  local month, month_was, month_slot = planned_total(month_key, metric, value, kind)
  local day, day_was, day_slot = planned_total(day_key, metric, value, kind)
  if month > MAX_CREDITS or day > MAX_CREDITS then return 'overflow' end
  batch_ids[id] = true
  pending_ids[#pending_ids + 1] = id
  keep_total(month_key, metric, month, month_was, month_slot, month_expires, month_top)
  keep_total(day_key, metric, day, day_was, day_slot, day_expires, day_top)
  if meta ~= '' then
    pending_log[#pending_log + 1] = string.format('%s|%s|%d|%s', id, metric, value, time_ms)
    pending_log[#pending_log + 1] = meta
  end
  return string.format('ok|%d|%d', month, day)
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
  for t, total in pairs(top_total) do
    local at, ttl = tonumber(ARGV[7 + t]), top_expires[t] - NOW_MS
    if ttl >= 1 and at > 0 then
      -- The TTL is looked at only when a member joins (the first makes
      -- the key); the rest of the time a ranking costs one ZADD.
      local key = KEYS[at]
      if redis.call('ZADD', key, 'GT', string.format('%d', total), ACCOUNT) == 1
        and redis.call('PTTL', key) < ttl then
        redis.call('PEXPIRE', key, ttl)
      end
    end
  end
  if #pending_log > 0 then append_log() end
end

-- Forgets ids past their window; run before any id is looked up.
local function forget_seen()
  redis.call('ZREMRANGEBYSCORE', SEEN, '-inf', NOW_MS)
end
