-- history.lua: a page of an account's history, newest first, showing
-- neither entries past the newest `max` (the stream is trimmed to about
-- that many, whole nodes at a time) nor entries older than `oldest_ms`.
-- Reads only.
-- KEYS: history
-- ARGV: max entries, oldest_ms, before ('' for the newest page; an id,
-- exclusive), count
local key, max, oldest, before, count = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
local floor = int(oldest) .. '-0'
local length = redis.call('XLEN', key)
if length > max then
  -- Where the shown entries start: after the newest hidden one, found from
  -- the oldest end when few are hidden (the usual ~100 of approximate
  -- trimming), else at the oldest of the newest `max`.
  local last
  if length - max <= max then
    local beyond = redis.call('XRANGE', key, '-', '+', 'COUNT', length - max)
    last = '(' .. beyond[#beyond][1]
  else
    local kept = redis.call('XREVRANGE', key, '+', '-', 'COUNT', max)
    last = kept[#kept][1]
  end
  if tonumber(string.match(last, '(%d+)-')) >= oldest then floor = last end
end
return redis.call('XREVRANGE', key, before == '' and '+' or '(' .. before, floor, 'COUNT', count)
