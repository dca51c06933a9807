-- reset.lua: start a new period now, none used; grants and holds stay.
-- The allowance is the given total and period, or the account's plan's
-- (by its subscription as of now, subscription.lua) with the total given
-- instead of the plan's when there is one. Atomic with its idempotency
-- record, so a retried reset never wipes usage recorded after the first one.
-- KEYS: credits, grants, holds, history, profile, subscription[, idempotency index, record]
-- ARGV: now_ms, now_text, fingerprint, window_ms (mutation.lua), history max
-- entries, max age ms (account.lua), total ('' for the plan's), period (''
-- for the plan's), key, then for the plan's: the default plan (name,
-- interval, price, credits, period) and each plan's name, credits, period
local replay = recall(new_CREDITS_REPLY, CREDITS_REPLY_status, CREDITS_REPLY_replayed)
if replay then return replay end
local total, period = tonumber(ARGV[7]), ARGV[8]
if period == '' then
  local d = default_plan(10)
  local name = allowance_plan(settled_subscription(load_subscription(), d), d)
  local credits
  credits, period = plan_allowance(name, 15, d)
  total = total or credits
end
local a = load_account()
settle(a)
local live = granted(a)
if total > MAX_CREDITS - live then
  local out = new_CREDITS_REPLY()
  out[CREDITS_REPLY_status], out[CREDITS_REPLY_result] = 'reset_overflow', int(live)
  return out
end
local before = remaining(a)
local t = period_math()
local _, next_reset = t.period_containing(NOW_MS, period, NOW_MS)
a.period_number = a.period_number + 1
a.total, a.used, a.period, a.reset, a.anchor = total, 0, period, t.format_time(next_reset), NOW_TEXT
a.exists = true
note(a, NOW_TEXT, 'reset', total, 0, ARGV[9], '')
a.log[#a.log].change = remaining(a) - before
local out = account_reply('ok', true, a)
remember(out)
return save(a, out)
