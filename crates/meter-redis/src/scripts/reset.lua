-- reset.lua: start a new period now with ARGV[3] credits, none used.
-- Atomic with its idempotency record, so a retried reset never wipes usage
-- recorded after the first one. meterd computes the next reset (ARGV[5]).
-- KEYS[1] credits hash, KEYS[2] idempotency record (optional)
-- ARGV: now_ms, now_text, total, period, next_reset_text, fingerprint, idempotency_window_ms
local now_text = ARGV[2]
local replay = recall(ARGV[6])
if replay then return replay end
local b = {
  total = tonumber(ARGV[3]), used = 0, trial = false, last = now_text,
  anchor = now_text, period = ARGV[4], reset = ARGV[5],
}
redis.call('HSET', KEYS[1], 'total', ARGV[3], 'used', '0', 'lastUpdate', now_text, 'isTrialCredits', 'false',
  'resetDate', ARGV[5], 'resetAnchor', now_text, 'resetPeriod', ARGV[4])
return remember(ARGV[6], ARGV[7], reply(true, b))
