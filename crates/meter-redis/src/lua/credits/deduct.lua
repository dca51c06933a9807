-- deduct.lua: take `amount` credits if that many remain.
-- Atomic because check and write must see the same balance: a read-then-write
-- from the client loses updates under concurrency. A script rather than
-- MULTI/EXEC because the write depends on what was read (no WATCH retries).
-- KEYS: credits hash[, idempotency record]
-- ARGV: now_ms, now_text, fingerprint, window_ms (mutation.lua), amount
local replay = recall(new_CREDITS_REPLY, CREDITS_REPLY_status, CREDITS_REPLY_replayed)
if replay then return replay end
local key, amount = KEYS[1], tonumber(ARGV[5])
local b = load_balance(key)
local applied = b ~= nil and b.total - b.used >= amount
if applied then
  b.used = b.used + amount
  b.last = NOW_TEXT
end
local out = balance_reply('ok', applied, b)
remember(out)
if b and b.due then
  redis.call('HSET', key, 'used', int(b.used), 'lastUpdate', b.last, 'resetDate', b.reset)
elseif applied then
  redis.call('HSET', key, 'used', int(b.used), 'lastUpdate', b.last)
end
return out
