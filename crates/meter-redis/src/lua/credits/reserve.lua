-- reserve.lua: hold `amount` credits until `expires` if that many remain,
-- taken from their buckets in deduct order and recorded in the hold.
-- KEYS: credits, grants, holds, history[, idempotency index, record]
-- ARGV: now_ms, now_text, fingerprint, window_ms (mutation.lua), history max
-- entries, max age ms (account.lua), amount, expires_text, key, reason
local replay = recall(new_CREDITS_REPLY, CREDITS_REPLY_status, CREDITS_REPLY_replayed)
if replay then return replay end
local amount, expires = tonumber(ARGV[7]), ARGV[8]
local a = load_account()
local h = nil
if a.exists then
  settle(a)
  if remaining(a) >= amount then
    if hold_rules(a).open_holds(a) >= MAX_OPEN_HOLDS then
      local out = new_CREDITS_REPLY()
      out[CREDITS_REPLY_status] = 'too_many_holds'
      return out
    end
    a.seq = a.seq + 1
    h = { id = 'h' .. int(a.seq), n = a.seq, amount = amount, expires = expires,
      period = a.period_number }
    h.allowance, h.grants = take(a, amount, true)
    hold_rules(a).open_hold(a, h)
    note(a, NOW_TEXT, 'reserve', amount, -amount, ARGV[9], ARGV[10]).hold = h.id
  end
end
local out = account_reply('ok', h ~= nil, a)
if h then
  out[CREDITS_REPLY_result] = h.id .. '|' .. h.expires
end
remember(out)
return save(a, out)
