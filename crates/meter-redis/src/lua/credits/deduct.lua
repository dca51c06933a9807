-- deduct.lua: take `amount` credits if that many remain: the allowance
-- first, then grants by earliest expiry (account.lua).
-- Atomic because check and write must see the same balance: a read-then-write
-- from the client loses updates under concurrency. A script rather than
-- MULTI/EXEC because the write depends on what was read (no WATCH retries).
-- KEYS: credits, grants, holds, history[, idempotency index, record]
-- ARGV: now_ms, now_text, fingerprint, window_ms (mutation.lua), history max
-- entries, max age ms (account.lua), amount, key, reason
local replay = recall(new_CREDITS_REPLY, CREDITS_REPLY_status, CREDITS_REPLY_replayed)
if replay then return replay end
local amount = tonumber(ARGV[7])
local a = load_account()
local applied = false
if a.exists then
  settle(a)
  applied = remaining(a) >= amount
  if applied then
    take(a, amount, false)
    note(a, NOW_TEXT, 'deduct', amount, -amount, ARGV[8], ARGV[9])
  end
end
local out = account_reply('ok', applied, a)
remember(out)
return save(a, out)
