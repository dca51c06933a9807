-- reset.lua: start a new period now with `total` credits, none used.
-- Atomic with its idempotency record, so a retried reset never wipes usage
-- recorded after the first one. It reads the stored balance first only to
-- refuse corrupt data: meterd never overwrites what it cannot read.
-- meterd computes the next reset (next_reset_text).
-- KEYS: credits hash[, idempotency record]
-- ARGV: now_ms, now_text, fingerprint, window_ms (mutation.lua), total, period, next_reset_text
local replay = recall(new_CREDITS_REPLY, CREDITS_REPLY_status, CREDITS_REPLY_replayed)
if replay then return replay end
local key, total, period, next_reset = KEYS[1], ARGV[5], ARGV[6], ARGV[7]
load_balance(key)
local b = {
  total = tonumber(total), used = 0, trial = false, last = NOW_TEXT,
  anchor = NOW_TEXT, period = period, reset = next_reset,
}
local out = balance_reply('ok', true, b)
remember(out)
redis.call('HSET', key, 'total', total, 'used', '0', 'lastUpdate', NOW_TEXT, 'isTrialCredits', 'false',
  'resetDate', next_reset, 'resetAnchor', NOW_TEXT, 'resetPeriod', period)
return out
