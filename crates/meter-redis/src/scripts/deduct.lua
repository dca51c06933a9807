-- deduct.lua: take ARGV[2] credits if that many remain.
-- Atomic because check and write must see the same balance: a read-then-write
-- from the client loses updates under concurrency. A script rather than
-- MULTI/EXEC because the write depends on what was read (no WATCH retries).
-- KEYS[1] credits hash, KEYS[2] idempotency record (optional)
-- ARGV: now_ms, amount, fingerprint, idempotency_window_ms
local now, amount = tonumber(ARGV[1]), tonumber(ARGV[2])
local replay = recall(ARGV[3])
if replay then return replay end
local b, err = load_balance(KEYS[1], now)
if err then return err end
local applied = false
if b and b.total - b.used >= amount then
  b.used = b.used + amount
  b.last = now
  applied = true
end
if b and (applied or b.dirty) then save_balance(KEYS[1], b) end
return remember(ARGV[3], ARGV[4], reply(applied, b))
