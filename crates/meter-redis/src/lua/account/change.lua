-- change.lua: apply a subscription change (UpdateSubscription,
-- CancelSubscription) by the rules of meter_core::ChangeRules: an event
-- older than the stored one is ignored; otherwise the subscription is
-- replaced, and a new allowance plan or billing period starts that plan's
-- allowance in the credits, atomically with the subscription.
-- KEYS: credits, grants, holds, history, profile, subscription[, idempotency index, record]
-- ARGV: now_ms, now_text, fingerprint, window_ms (mutation.lua), history max
-- entries, max age ms (account.lua), key, default plan (name, interval,
-- price, credits, period: subscription.lua), mode (update, cancel_end,
-- cancel_now), event time, then for updates: plan, plan credits, plan
-- period, status, interval, amountMicros, period start, period end ('' for
-- none), cancel at period end (1/0), customer id, subscription id
local replay = recall(new_ACCOUNT_REPLY, ACCOUNT_REPLY_status, ACCOUNT_REPLY_replayed)
if replay then return replay end
local d = default_plan(8)
local mode, event = ARGV[13], ARGV[14]
local current = settled_subscription(load_subscription(), d)
local a = load_account()
settle(a)
if current.updatedAt and current.updatedAt > event then
  -- Older than what is stored: answer the subscription, change nothing.
  local out = full_reply('ok', '0', nil, subscription_fields(current), a)
  remember(out)
  return out
end
local nxt, anchor, new_period = nil, NOW_TEXT, false
if mode == 'update' then
  local plan, status = ARGV[15], ARGV[18]
  local start = ARGV[21] ~= '' and ARGV[21] or nil
  local purchase = start or event
  if plan == current.plan then purchase = current.purchaseTime or start or event end
  local canceled_time = nil
  if status == 'canceled' then canceled_time = current.canceledTime or event end
  nxt = {
    plan = plan, status = status, interval = ARGV[19], amountMicros = tonumber(ARGV[20]),
    purchaseTime = purchase, periodStart = start, renewalTime = ARGV[22] ~= '' and ARGV[22] or nil,
    cancelAtPeriodEnd = ARGV[23] == '1', canceledTime = canceled_time,
    customerId = ARGV[24] ~= '' and ARGV[24] or current.customerId,
    subscriptionId = ARGV[25] ~= '' and ARGV[25] or current.subscriptionId,
    updatedAt = event,
  }
  new_period = start ~= nil and start ~= current.periodStart
  anchor = start or NOW_TEXT
elseif mode == 'cancel_end' and current.renewalTime then
  nxt = {}
  for k, v in pairs(current) do nxt[k] = v end
  nxt.cancelAtPeriodEnd, nxt.updatedAt = true, event
else
  nxt = canceled(current, event < NOW_TEXT and event or NOW_TEXT, d)
  nxt.updatedAt = event
end
local was, will = allowance_plan(current, d), allowance_plan(nxt, d)
local planned = nil
if nxt.cancelAtPeriodEnd and nxt.renewalTime and will ~= d.name then
  planned = { at = nxt.renewalTime, total = d.credits, period = d.period }
end
if was ~= will or (new_period and will ~= d.name) or not a.reset then
  local total, period = tonumber(ARGV[16]), ARGV[17]
  if will == d.name then total, period, anchor = d.credits, d.period, NOW_TEXT end
  if anchor > NOW_TEXT then anchor = NOW_TEXT end
  begin_allowance(a, total, period, anchor, NOW_TEXT, ARGV[7])
  a.planned = planned
else
  local p = a.planned
  if (p == nil) ~= (planned == nil)
    or (p and (p.at ~= planned.at or p.total ~= planned.total or p.period ~= planned.period)) then
    a.planned = planned
    a.dirty = true
  end
end
local fields = subscription_fields(nxt)
local out = full_reply('ok', '1', nil, fields, a)
remember(out)
write_hash(SK, fields_SUBSCRIPTION_HASH(), fields)
save(a)
return out
