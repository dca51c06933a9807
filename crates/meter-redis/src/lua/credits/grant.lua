-- grant.lua: add `amount` credits to the total, creating the account if needed.
-- Atomic so that the overflow check and the due reset see the balance being written.
-- KEYS: credits hash[, idempotency record]
-- ARGV: now_ms, now_text, fingerprint, window_ms (mutation.lua), amount, trial ('true'|'false')
local replay = recall(new_CREDITS_REPLY, CREDITS_REPLY_status, CREDITS_REPLY_replayed)
if replay then return replay end
local key, amount, trial = KEYS[1], tonumber(ARGV[5]), ARGV[6]
local b = load_balance(key) or { total = 0, used = 0 }
if b.total + amount > MAX_CREDITS then
  local out = new_CREDITS_REPLY()
  out[CREDITS_REPLY_status], out[CREDITS_REPLY_total] = 'overflow', int(b.total)
  return out
end
b.total = b.total + amount
b.trial = trial == 'true'
b.last = NOW_TEXT
local out = balance_reply('ok', true, b)
remember(out)
redis.call('HSET', key, 'total', int(b.total), 'used', int(b.used), 'lastUpdate', NOW_TEXT,
  'isTrialCredits', trial)
if b.due then redis.call('HSET', key, 'resetDate', b.reset) end
return out
