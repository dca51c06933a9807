-- grant.lua: add a grant, creating the account if needed.
-- Atomic so that the overflow check and the settling see the balance being written.
-- KEYS: credits, grants, holds, history[, idempotency index, record]
-- ARGV: now_ms, now_text, fingerprint, window_ms (mutation.lua), history max
-- entries, max age ms (account.lua), amount, kind, expires ('' never),
-- wanted id (the idempotency key, or ''), reason
local replay = recall(new_CREDITS_REPLY, CREDITS_REPLY_status, CREDITS_REPLY_replayed)
if replay then return replay end
local amount, kind, expires, wanted = tonumber(ARGV[7]), ARGV[8], ARGV[9], ARGV[10]
local a = load_account()
settle(a)
local total = a.total
for _, g in ipairs(a.grants) do
  if not grant_rules(a).expired(g) then total = total + g.amount end
end
if total + amount > MAX_CREDITS then
  local out = new_CREDITS_REPLY()
  out[CREDITS_REPLY_status], out[CREDITS_REPLY_result] = 'overflow', int(total)
  return out
end
if #a.grants >= MAX_LIVE_GRANTS then
  local out = new_CREDITS_REPLY()
  out[CREDITS_REPLY_status] = 'too_many_grants'
  return out
end
local id = wanted
if id == '' or grant_rules(a).find(a, id) then
  repeat
    a.seq = a.seq + 1
    id = (wanted == '' and 'g' or wanted .. '#') .. int(a.seq)
  until not grant_rules(a).find(a, id)
end
local g = { id = id, kind = kind, amount = amount, left = amount, held = 0, created = NOW_TEXT,
  expires = expires ~= '' and expires or nil }
a.grants[#a.grants + 1] = g
table.sort(a.grants, grant_rules(a).order)
a.grants_dirty[id] = true
a.exists = true
local e = note(a, NOW_TEXT, 'grant', amount, amount, wanted, ARGV[11])
e.grant = id
local out = account_reply('ok', true, a)
out[CREDITS_REPLY_result] = id
remember(out)
return save(a, out)
