-- quota.lua: check a quota against the month's usage and, when it fits,
-- count the event that consumes it, in one atomic step (racing callers
-- never both take the last unit). The limit is the account's plan's, by
-- its subscription as of now (account/subscription.lua).
-- KEYS: seen ids, index, the month hash of now, the day hash of now, the
-- profile (unused), the subscription
-- ARGV: now_ms, window_ms, now_text, metric, amount, the default plan
-- (name, interval, price, credits, period), then the id to consume ('' for
-- a check only), value, kind (sum or max), month expiry ms, day expiry ms;
-- then each plan's name, limit ('' for unlimited) and hard (1/0)
-- A consumed id counted before (a retry) answers allowed, 'dup', taking
-- nothing. For a gauge the amount is the new level: it fits when it is
-- within the limit.
-- Replies: allowed (1/0), used before, the event's outcome ('' when
-- nothing was consumed), the plan, its limit ('' unlimited), hard (1/0).
local metric, amount = ARGV[4], tonumber(ARGV[5])
local d = default_plan(6)
local plan = allowance_plan(settled_subscription(load_subscription(), d), d)
local found, limit, hard = false, '', false
for i = 16, #ARGV, 3 do
  if ARGV[i] == plan then found, limit, hard = true, ARGV[i + 1], ARGV[i + 2] == '1' end
end
if not found then
  -- A plan the catalog no longer has: the default plan's limit.
  plan = d.name
  for i = 16, #ARGV, 3 do
    if ARGV[i] == plan then limit, hard = ARGV[i + 1], ARGV[i + 2] == '1' end
  end
end
local stored = redis.call('HGET', KEYS[3], metric)
local used = stored and stored_count(KEYS[3], metric, stored) or 0
local id, kind = ARGV[11], ARGV[13]
-- Ids past their window first (a write no answer can see).
if id ~= '' then forget_seen() end
local outcome = ''
local allowed
if id ~= '' and redis.call('ZSCORE', SEEN, id) then
  allowed, outcome = true, 'dup'
else
  local wanted = used + amount
  if kind == 'max' then wanted = amount end
  allowed = limit == '' or not hard or wanted <= tonumber(limit)
  if allowed and id ~= '' then
    outcome = plan_event(id, metric, tonumber(ARGV[12]), kind, KEYS[3], tonumber(ARGV[14]),
      KEYS[4], tonumber(ARGV[15]))
    if outcome == 'overflow' then allowed = false end
    commit()
  end
end
return { allowed and '1' or '0', string.format('%d', used), outcome, plan, limit, hard and '1' or '0' }
