-- grant.lua: add `amount` credits to the total, creating the account if needed.
-- Atomic so that the overflow check and the due reset see the balance being written.
-- KEYS: credits hash[, idempotency record]
-- ARGV: now_ms, now_text, fingerprint, window_ms (mutation.lua), amount, trial ('true'|'false')
local replay = recall(CREDITS_REPLY)
if replay then return replay end
local key, amount, trial = KEYS[1], tonumber(ARGV[5]), ARGV[6]
local b = load_balance(key) or { total = 0, used = 0 }
if b.total + amount > MAX_CREDITS then
  return pack(CREDITS_REPLY, { status = 'overflow', total = int(b.total) })
end
b.total = b.total + amount
b.trial = trial == 'true'
b.last = NOW_TEXT
local out = balance_reply('ok', true, b)
remember(out)
local fields = {
  'total', int(b.total), 'used', int(b.used), 'lastUpdate', NOW_TEXT, 'isTrialCredits', trial,
}
if b.due then
  table.insert(fields, 'resetDate')
  table.insert(fields, b.reset)
end
redis.call('HSET', key, unpack(fields))
return out
