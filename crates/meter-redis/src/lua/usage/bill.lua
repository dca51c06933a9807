-- bill.lua: an account's usage of one month (unless past its retention by
-- the caller's clock) and its subscription hash, read in one atomic step;
-- writes nothing. meterd settles the subscription and prices the bill.
-- KEYS: the month hash, the index, the subscription
-- ARGV: now_ms
local usage = {}
local expires = redis.call('ZSCORE', KEYS[2], KEYS[1])
if expires and tonumber(expires) > tonumber(ARGV[1]) then usage = redis.call('HGETALL', KEYS[1]) end
return { usage, read_SUBSCRIPTION_HASH(KEYS[3]) }
