-- reset.lua: start a new period now with `total` credits, none used; grants
-- and holds stay. Atomic with its idempotency record, so a retried reset
-- never wipes usage recorded after the first one. meterd computes the next
-- reset (next_reset_text).
-- KEYS: credits, grants, holds, history[, idempotency index, record]
-- ARGV: now_ms, now_text, fingerprint, window_ms (mutation.lua), history max
-- entries, max age ms (account.lua), total, period, next_reset_text, key
local replay = recall(new_CREDITS_REPLY, CREDITS_REPLY_status, CREDITS_REPLY_replayed)
if replay then return replay end
local total = tonumber(ARGV[7])
local a = load_account()
settle(a)
local granted = 0
for _, g in ipairs(a.grants) do
  if not grant_rules(a).expired(g) then granted = granted + g.amount end
end
if total > MAX_CREDITS - granted then
  local out = new_CREDITS_REPLY()
  out[CREDITS_REPLY_status], out[CREDITS_REPLY_result] = 'reset_overflow', int(granted)
  return out
end
local before = remaining(a)
a.period_number = a.period_number + 1
a.total, a.used, a.period, a.reset, a.anchor = total, 0, ARGV[8], ARGV[9], NOW_TEXT
a.exists = true
note(a, NOW_TEXT, 'reset', total, 0, ARGV[10], '')
a.log[#a.log].change = remaining(a) - before
local out = account_reply('ok', true, a)
remember(out)
save(a)
return out
