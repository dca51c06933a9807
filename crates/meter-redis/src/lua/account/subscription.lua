-- subscription.lua: an account's subscription and profile as the account
-- scripts hold them, and the rules of meter_core::ChangeRules in Lua (the
-- contract suite holds the two to the same behaviour).
--
-- KEYS[5] profile hash (PROFILE_HASH), KEYS[6] subscription hash
-- (SUBSCRIPTION_HASH), after the credit keys of credits/account.lua.
-- A subscription is a table keyed by the hash's field names, times as
-- stored text, amountMicros a number, cancelAtPeriodEnd a boolean.

local PK, SK = KEYS[5], KEYS[6]

-- Statuses that get the plan's allowance; the rest get the default plan's.
local GRANTING = { active = true, trialing = true, past_due = true }
-- Where each status sits in a subscription's life (SubscriptionStatus::stage).
local STAGE = { incomplete = 0, trialing = 1, active = 2, past_due = 3, unpaid = 4, paused = 4,
  canceled = 5, incomplete_expired = 5 }
local STATUSES = { active = true, trialing = true, past_due = true, canceled = true, unpaid = true,
  incomplete = true, incomplete_expired = true, paused = true }

-- The default plan from ARGV[i..i+4]: name, interval, price, credits, period.
local function default_plan(i)
  return { name = ARGV[i], interval = ARGV[i + 1], price = tonumber(ARGV[i + 2]),
    credits = tonumber(ARGV[i + 3]), period = ARGV[i + 4] }
end

-- The subscription of an account that has none: the default plan, active.
local function default_subscription(d)
  return { plan = d.name, status = 'active', interval = d.interval, amountMicros = d.price,
    cancelAtPeriodEnd = false, customerId = '', subscriptionId = '' }
end

-- The stored subscription, checked; nil without one.
local function load_subscription()
  local f = read_SUBSCRIPTION_HASH(SK)
  local plan = f[SUBSCRIPTION_HASH_plan]
  if not plan then return nil end
  local function time(at, field)
    local text = f[at]
    if not text then return nil end
    return stored_time(SK, field, text)
  end
  local s = {
    plan = plan, status = f[SUBSCRIPTION_HASH_status], interval = f[SUBSCRIPTION_HASH_interval],
    amountMicros = stored_count(SK, 'amountMicros', f[SUBSCRIPTION_HASH_amountMicros] or ''),
    purchaseTime = time(SUBSCRIPTION_HASH_purchaseTime, 'purchaseTime'),
    periodStart = time(SUBSCRIPTION_HASH_periodStart, 'periodStart'),
    renewalTime = time(SUBSCRIPTION_HASH_renewalTime, 'renewalTime'),
    canceledTime = time(SUBSCRIPTION_HASH_canceledTime, 'canceledTime'),
    updatedAt = time(SUBSCRIPTION_HASH_updatedAt, 'updatedAt'),
    customerId = f[SUBSCRIPTION_HASH_customerId] or '',
    subscriptionId = f[SUBSCRIPTION_HASH_subscriptionId] or '',
  }
  if not STATUSES[s.status or ''] then corrupt(SK, 'status', s.status or '') end
  if s.interval ~= 'month' and s.interval ~= 'year' then corrupt(SK, 'interval', s.interval or '') end
  local cancel = f[SUBSCRIPTION_HASH_cancelAtPeriodEnd]
  if cancel ~= '1' and cancel ~= '0' then corrupt(SK, 'cancelAtPeriodEnd', cancel or '') end
  s.cancelAtPeriodEnd = cancel == '1'
  return s
end

-- `s` canceled at `at`: the default plan, status canceled, billing ids and
-- last event time kept; one canceled before keeps its times.
local function canceled(s, at, d)
  local c = default_subscription(d)
  if s.status == 'canceled' and s.canceledTime then at = s.canceledTime end
  c.status, c.canceledTime, c.purchaseTime = 'canceled', at, at
  c.updatedAt = s.updatedAt
  c.customerId, c.subscriptionId = s.customerId, s.subscriptionId
  return c
end

-- The subscription as of now: one that was to end at its period's end and
-- reached it is canceled from renewalTime; none reads as the default.
local function settled_subscription(s, d)
  if not s then return default_subscription(d) end
  if s.cancelAtPeriodEnd and s.renewalTime and s.renewalTime <= NOW_TEXT then
    return canceled(s, s.renewalTime, d)
  end
  return s
end

-- The credits and period of plan `name`, from the (name, credits, period)
-- triples of ARGV from `first` on; the default plan's when not there.
local function plan_allowance(name, first, d)
  for i = first, #ARGV, 3 do
    if ARGV[i] == name then return tonumber(ARGV[i + 1]), ARGV[i + 2] end
  end
  return d.credits, d.period
end

-- The plan whose allowance the account gets.
local function allowance_plan(s, d)
  if GRANTING[s.status] then return s.plan end
  return d.name
end

-- The subscription's fields in SUBSCRIPTION_HASH order ('' for none).
local function subscription_fields(s)
  local out = new_SUBSCRIPTION_HASH()
  out[SUBSCRIPTION_HASH_plan] = s.plan
  out[SUBSCRIPTION_HASH_status] = s.status
  out[SUBSCRIPTION_HASH_interval] = s.interval
  out[SUBSCRIPTION_HASH_amountMicros] = int(s.amountMicros)
  out[SUBSCRIPTION_HASH_purchaseTime] = s.purchaseTime or ''
  out[SUBSCRIPTION_HASH_periodStart] = s.periodStart or ''
  out[SUBSCRIPTION_HASH_renewalTime] = s.renewalTime or ''
  out[SUBSCRIPTION_HASH_cancelAtPeriodEnd] = s.cancelAtPeriodEnd and '1' or '0'
  out[SUBSCRIPTION_HASH_canceledTime] = s.canceledTime or ''
  out[SUBSCRIPTION_HASH_customerId] = s.customerId
  out[SUBSCRIPTION_HASH_subscriptionId] = s.subscriptionId
  out[SUBSCRIPTION_HASH_updatedAt] = s.updatedAt or ''
  return out
end

-- Writes `values` (a layout's values, '' for none) to the hash `key` with
-- the field `names` (fields_<LAYOUT>()): the set ones with one HSET, the
-- rest removed.
local function write_hash(key, names, values)
  local set, gone = {}, {}
  for i, name in ipairs(names) do
    if values[i] ~= '' then
      set[#set + 1] = name
      set[#set + 1] = values[i]
    else
      gone[#gone + 1] = name
    end
  end
  if #gone > 0 then redis.call('HDEL', key, unpack(gone)) end
  if #set > 0 then redis.call('HSET', key, unpack(set)) end
end

-- The reply of an account script: status, result, replayed, then the
-- profile, the subscription and the credits reply (account_reply) of `a`.
local function full_reply(status, result, profile, subscription, a)
  local out = new_ACCOUNT_REPLY()
  out[ACCOUNT_REPLY_status], out[ACCOUNT_REPLY_result], out[ACCOUNT_REPLY_replayed] =
    status, result, '0'
  for _, part in ipairs({ profile or new_PROFILE_HASH(), subscription or new_SUBSCRIPTION_HASH(),
    account_reply('ok', true, a) }) do
    for i = 1, #part do out[#out + 1] = part[i] or '' end
  end
  return out
end
