-- quota.lua: check a quota against the month's usage and, when it fits,
-- count the event that consumes it, in one atomic step (racing callers
-- never both take the last unit).
-- KEYS: seen ids, index, the month hash of now, the day hash of now
-- ARGV: now_ms, window_ms, metric, amount, limit ('' unlimited), hard (1/0),
-- then to consume: id, value, kind, month expiry ms, day expiry ms
-- Replies: allowed (1/0), used before, and the event's outcome ('' when
-- nothing was consumed).
local metric, amount, limit, hard = ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6] == '1'
local stored = redis.call('HGET', KEYS[3], metric)
local used = stored and stored_count(KEYS[3], metric, stored) or 0
local allowed = limit == '' or not hard or used + amount <= tonumber(limit)
local outcome = ''
if allowed and ARGV[7] then
  forget_seen()
  outcome = record_event(ARGV[7], metric, tonumber(ARGV[8]), ARGV[9], KEYS[3], tonumber(ARGV[10]),
    KEYS[4], tonumber(ARGV[11]))
  keep_alive()
end
return { allowed and '1' or '0', string.format('%d', used), outcome }
