-- read.lua: the usage of one period as stored, unless its retention has
-- passed by the caller's clock (the index holds each period hash's expiry).
-- KEYS: the period hash, the index
-- ARGV: now_ms
local expires = redis.call('ZSCORE', KEYS[2], KEYS[1])
if not expires or tonumber(expires) <= tonumber(ARGV[1]) then return {} end
return redis.call('HGETALL', KEYS[1])
