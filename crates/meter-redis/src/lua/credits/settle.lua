-- settle.lua: commit `amount` of an open hold (the rest goes back), or
-- release it all. The idempotency record is keyed by the hold, so a second
-- commit or release answers the first settlement.
-- KEYS: credits, grants, holds, history, idempotency index, record of the hold
-- ARGV: now_ms, now_text, fingerprint, window_ms (mutation.lua), history max
-- entries, max age ms (account.lua), hold id, amount ('' to release), reason
local replay = recall(new_CREDITS_REPLY, CREDITS_REPLY_status, CREDITS_REPLY_replayed)
if replay then return replay end
local id, commit = ARGV[7], tonumber(ARGV[8])
local a = load_account()
local h = nil
if a.exists then
  settle(a)
  h = hold_rules(a).find_hold(a, id)
end
if not h then
  local out = new_CREDITS_REPLY()
  out[CREDITS_REPLY_status] = 'no_hold'
  return out
end
if commit and commit > h.amount then
  local out = new_CREDITS_REPLY()
  out[CREDITS_REPLY_status], out[CREDITS_REPLY_result] = 'above_hold', int(h.amount)
  return out
end
hold_rules(a).close_hold(a, h)
local returned = hold_rules(a).give_back(a, h, commit or 0)
local e = note(a, NOW_TEXT, commit and 'commit' or 'release', commit or h.amount, returned)
e.hold, e.reason = id, ARGV[9]
local out = account_reply('ok', true, a)
out[CREDITS_REPLY_result] = string.format('%s|%d|%d', commit and 'commit' or 'release',
  commit or 0, returned)
remember(out)
return save(a, out)
