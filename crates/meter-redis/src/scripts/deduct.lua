-- deduct.lua: take ARGV[3] credits if that many remain.
-- Atomic because check and write must see the same balance: a read-then-write
-- from the client loses updates under concurrency. A script rather than
-- MULTI/EXEC because the write depends on what was read (no WATCH retries).
-- KEYS[1] credits hash, KEYS[2] idempotency record (optional)
-- ARGV: now_ms, now_text, amount, fingerprint, idempotency_window_ms
local now_text, amount = ARGV[2], tonumber(ARGV[3])
local replay = recall(ARGV[4])
if replay then return replay end
local b, err = load_balance(KEYS[1], tonumber(ARGV[1]), now_text)
if err then return err end
local applied = false
if b and b.total - b.used >= amount then
  b.used = b.used + amount
  b.last = now_text
  applied = true
  save_balance(KEYS[1], b, { 'used', string.format('%d', b.used), 'lastUpdate', now_text })
elseif b and b.dirty then
  save_balance(KEYS[1], b, {})
end
return remember(ARGV[4], ARGV[5], reply(applied, b))
