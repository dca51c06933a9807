-- grant.lua: add ARGV[3] credits to the total, creating the account if needed.
-- Atomic so that the overflow check and the due reset see the balance being written.
-- KEYS[1] credits hash, KEYS[2] idempotency record (optional)
-- ARGV: now_ms, now_text, amount, trial ('true'|'false'), fingerprint, idempotency_window_ms
local now_text, amount = ARGV[2], tonumber(ARGV[3])
local replay = recall(ARGV[5])
if replay then return replay end
local b, err = load_balance(KEYS[1], tonumber(ARGV[1]), now_text)
if err then return err end
b = b or { total = 0, used = 0 }
if b.total + amount > MAX_CREDITS then
  return { 'overflow', string.format('%d', b.total) }
end
b.total = b.total + amount
b.trial = ARGV[4] == 'true'
b.last = now_text
save_balance(KEYS[1], b, {
  'total', string.format('%d', b.total), 'used', string.format('%d', b.used),
  'lastUpdate', now_text, 'isTrialCredits', ARGV[4],
})
return remember(ARGV[5], ARGV[6], reply(true, b))
