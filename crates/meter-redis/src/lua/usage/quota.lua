-- quota.lua: check a quota against the month's usage and, when it fits,
-- count the event that consumes it, in one atomic step (racing callers
-- never both take the last unit). The limit is the account's plan's, by
-- its subscription as of now (account/subscription.lua).
-- KEYS: usage.lua's three, the month hash of now, the profile (unused),
-- the subscription (KEYS[5] and [6], as account/subscription.lua reads
-- them), the day hash of now, then (on one Redis node, when consuming)
-- the month's and the day's rankings
-- ARGV: usage.lua's (rankings 1 and 2 are the month's and the day's when
-- consuming), then from ARGS: metric, amount, the default plan (name,
-- interval, price, credits, period), the id to consume ('' for a check
-- only), value, kind (sum or max), month expiry ms, day expiry ms; then
-- each plan's name, limit ('' for unlimited) and hard (1/0)
-- A consumed id counted before (a retry) answers allowed,
-- 'dup|<month total>|<day total>', taking nothing. For a gauge the amount is the new level: it fits when it is
-- within the limit.
-- Replies: allowed (1/0), used before, the event's outcome ('' when
-- nothing was consumed), the plan, its limit ('' unlimited), hard (1/0).
local metric, amount = ARGV[ARGS], tonumber(ARGV[ARGS + 1])
local d = default_plan(ARGS + 2)
local plan = allowance_plan(settled_subscription(load_subscription(), d), d)
local PLANS = ARGS + 12
local found, limit, hard = false, '', false
for i = PLANS, #ARGV, 3 do
  if ARGV[i] == plan then found, limit, hard = true, ARGV[i + 1], ARGV[i + 2] == '1' end
end
if not found then
  -- A plan the catalog no longer has: the default plan's limit.
  plan = d.name
  for i = PLANS, #ARGV, 3 do
    if ARGV[i] == plan then limit, hard = ARGV[i + 1], ARGV[i + 2] == '1' end
  end
end
local MONTH, DAY = KEYS[4], KEYS[7]
local stored = redis.call('HGET', MONTH, metric)
local used = stored and stored_count(MONTH, metric, stored) or 0
local id, kind = ARGV[ARGS + 7], ARGV[ARGS + 9]
-- Ids past their window first (a write no answer can see).
if id ~= '' then forget_seen() end
local outcome = ''
local allowed
if id ~= '' and redis.call('ZSCORE', SEEN, id) then
  allowed = true
  outcome = string.format('dup|%d|%d', current(MONTH, metric), current(DAY, metric))
else
  local wanted = used + amount
  if kind == 'max' then wanted = amount end
  allowed = limit == '' or not hard or wanted <= tonumber(limit)
  if allowed and id ~= '' then
    outcome = plan_event(id, metric, tonumber(ARGV[ARGS + 8]), kind, MONTH,
      tonumber(ARGV[ARGS + 10]), DAY, tonumber(ARGV[ARGS + 11]), 1, 2, '', NOW_MS)
    if outcome == 'overflow' then allowed = false end
    commit()
  end
end
return { allowed and '1' or '0', string.format('%d', used), outcome, plan, limit, hard and '1' or '0' }
