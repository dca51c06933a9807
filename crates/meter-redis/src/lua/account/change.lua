-- change.lua: apply a subscription change (UpdateSubscription,
-- CancelSubscription) by the rules of meter_core::ChangeRules, atomically
-- with the credit allowance it starts, renews or plans. Ignored (result
-- '0', nothing but the idempotency record written): an event older than
-- the stored one, or of the same second and an earlier stage; one about
-- another billing subscription than the stored paying one, unless it grants
-- a plan itself; a cancellation of an account without a subscription.
-- Status 'period_ended' (result: the period's end): a cancellation at
-- period end of a billing period that already ended.
-- KEYS: credits, grants, holds, history, profile, subscription[, idempotency index, record]
-- ARGV: now_ms, now_text, fingerprint, window_ms (mutation.lua), history max
-- entries, max age ms (account.lua), key, default plan (name, interval,
-- price, credits, period: subscription.lua), mode (update, cancel_end,
-- cancel_now), event time, plan, status, interval, amountMicros, period
-- start, period end ('' for none), cancel at period end (1/0), customer
-- id, subscription id (for cancellations only the last is set), then each
-- plan's name, credits, period
local replay = recall(new_ACCOUNT_REPLY, ACCOUNT_REPLY_status, ACCOUNT_REPLY_replayed)
if replay then return replay end
local PLANS = 24
local d = default_plan(8)
local mode, event = ARGV[13], ARGV[14]
local stored = load_subscription()
local current = settled_subscription(stored, d)
local a = load_account()

-- Answers `current` and changes nothing but the idempotency record.
local function ignored()
  settle(a)
  local out = full_reply('ok', '0', nil, subscription_fields(current), a)
  remember(out)
  return out
end

local status = mode == 'update' and ARGV[16] or 'canceled'
local about = ARGV[23]
local another = about ~= '' and current.subscriptionId ~= '' and about ~= current.subscriptionId
-- Within one billing subscription, the same second goes by stage.
if current.updatedAt and (current.updatedAt > event
    or (current.updatedAt == event and not another and STAGE[status] < STAGE[current.status])) then
  return ignored()
end
if another and allowance_plan(current, d) ~= d.name and not GRANTING[status] then
  return ignored()
end
if mode ~= 'update' and current.plan == d.name then return ignored() end
settle(a)
local nxt, anchor, new_period = nil, NOW_TEXT, false
if mode == 'update' then
  local given_start = ARGV[19] ~= '' and ARGV[19] or nil
  local given_end = ARGV[20] ~= '' and ARGV[20] or nil
  local stale = given_start and current.periodStart and given_start < current.periodStart
  local start, finish = given_start, given_end
  if stale or not given_start then start = current.periodStart end
  if stale then
    finish = current.renewalTime
  elseif not given_end then
    finish = start == current.periodStart and current.renewalTime or nil
  end
  local plan = ARGV[15]
  local purchase = start or event
  if plan == current.plan then purchase = current.purchaseTime or start or event end
  local canceled_time = nil
  if status == 'canceled' then canceled_time = current.canceledTime or event end
  nxt = {
    plan = plan, status = status, interval = ARGV[17], amountMicros = tonumber(ARGV[18]),
    purchaseTime = purchase, periodStart = start, renewalTime = finish,
    cancelAtPeriodEnd = ARGV[21] == '1', canceledTime = canceled_time,
    customerId = ARGV[22] ~= '' and ARGV[22] or current.customerId,
    subscriptionId = about ~= '' and about or current.subscriptionId,
    updatedAt = event,
  }
  new_period = start ~= nil and start ~= current.periodStart
  anchor = start or NOW_TEXT
elseif mode == 'cancel_end' and current.renewalTime then
  if current.renewalTime <= NOW_TEXT then
    local out = new_ACCOUNT_REPLY()
    out[ACCOUNT_REPLY_status], out[ACCOUNT_REPLY_result] = 'period_ended', current.renewalTime
    return out
  end
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
local total, period = plan_allowance(will, PLANS, d)
if will == d.name then anchor = NOW_TEXT end
if anchor > NOW_TEXT then anchor = NOW_TEXT end
local running_since = nil
if a.reset then
  local t = period_math()
  running_since = t.format_time(t.period_containing(t.parse_time(a.anchor), a.period, NOW_MS))
end
-- A renewal keeps the running allowance when it already reset at the
-- boundary (or will: the period starts a moment ahead).
local renewal = new_period and will ~= d.name and running_since
  and (running_since >= nxt.periodStart or nxt.periodStart > NOW_TEXT)
if was ~= will or not running_since or (new_period and will ~= d.name and not renewal) then
  begin_allowance(a, total, period, anchor, NOW_TEXT, ARGV[7])
elseif renewal then
  -- Keep the schedule (its anchor day survives short months) and what
  -- was used; the plan's credits may have changed.
  local before = remaining(a)
  local cap = MAX_CREDITS - granted(a)
  if total > cap then total = cap end
  if total ~= a.total then a.total, a.dirty = total, true end
  local change = remaining(a) - before
  if change ~= 0 then
    local e = note(a, NOW_TEXT, 'plan_change', total, 0, ARGV[7], '')
    e.change = change
  end
end
local p = a.planned
if (p == nil) ~= (planned == nil)
  or (p and (p.at ~= planned.at or p.total ~= planned.total or p.period ~= planned.period)) then
  a.dirty = true
end
a.planned = planned
-- A fall back planned for a time already past happens now.
settle(a)
local fields = subscription_fields(nxt)
local out = full_reply('ok', '1', nil, fields, a)
remember(out)
write_hash(SK, fields_SUBSCRIPTION_HASH(), fields)
return save(a, out)
