-- grant.lua: add ARGV[2] credits to the total, creating the account if needed.
-- Atomic so that the overflow check and the due reset see the balance being written.
-- KEYS[1] credits hash, KEYS[2] idempotency record (optional)
-- ARGV: now_ms, amount, trial ('true'|'false'), fingerprint, idempotency_window_ms
local now, amount = tonumber(ARGV[1]), tonumber(ARGV[2])
local replay = recall(ARGV[4])
if replay then return replay end
local b, err = load_balance(KEYS[1], now)
if err then return err end
b = b or { total = 0, used = 0 }
if b.total + amount > MAX_CREDITS then
  return { 'overflow', string.format('%d', b.total) }
end
b.total = b.total + amount
b.trial = ARGV[3] == 'true'
b.last = now
save_balance(KEYS[1], b)
return remember(ARGV[4], ARGV[5], reply(true, b))
