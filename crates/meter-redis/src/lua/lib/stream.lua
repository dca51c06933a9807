-- stream.lua: reading a bounded log kept in a stream (credits history,
-- usage events), whose entry ids are `<ms>-<n>` by meterd's clock.

-- Where a newest-first read of `key` stops (an XREVRANGE end): it shows
-- neither entries past the newest `max` (the stream is trimmed to about
-- that many, whole nodes at a time) nor entries older than `oldest` ms.
local function stream_floor(key, max, oldest)
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
  return floor
end
