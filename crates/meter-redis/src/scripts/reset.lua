-- reset.lua: start a new period now with ARGV[2] credits, none used.
-- Atomic with its idempotency record, so a retried reset never wipes usage
-- recorded after the first one.
-- KEYS[1] credits hash, KEYS[2] idempotency record (optional)
-- ARGV: now_ms, total, period, fingerprint, idempotency_window_ms
local now = tonumber(ARGV[1])
local replay = recall(ARGV[4])
if replay then return replay end
local b = {
  total = tonumber(ARGV[2]), used = 0, trial = false, last = now,
  anchor = now, period = ARGV[3], reset = boundary(now, ARGV[3], 1),
}
save_balance(KEYS[1], b)
return remember(ARGV[4], ARGV[5], reply(true, b))
