-- history.lua: a page of an account's history, newest first, showing
-- neither entries past the newest `max` nor entries older than `oldest_ms`
-- (lib/stream.lua). Reads only.
-- KEYS: history
-- ARGV: max entries, oldest_ms, before ('' for the newest page; an id,
-- exclusive), count
local key, before, count = KEYS[1], ARGV[3], ARGV[4]
local floor = stream_floor(key, tonumber(ARGV[1]), tonumber(ARGV[2]))
return redis.call('XREVRANGE', key, before == '' and '+' or '(' .. before, floor, 'COUNT', count)
