-- register.lua: create the account on its first call, note a login on the
-- next ones. The first call saves the profile (joined and lastLogin now),
-- the default plan's subscription if a billing event has not made one, and
-- that plan's allowance if the credits have no schedule. Atomic, so
-- concurrent first calls create one account and allocate once.
-- KEYS: credits, grants, holds, history, profile, subscription[, idempotency index, record]
-- ARGV: now_ms, now_text, fingerprint, window_ms (mutation.lua), history max
-- entries, max age ms (account.lua), key, default plan (name, interval,
-- price, credits, period: subscription.lua), email, name, image, role
local replay = recall(new_ACCOUNT_REPLY, ACCOUNT_REPLY_status, ACCOUNT_REPLY_replayed)
if replay then return replay end
local d = default_plan(8)
local profile = read_PROFILE_HASH(PK)
local s = load_subscription()
local a = load_account()
settle(a)
local created, profile_writes, new_subscription = '0', nil, nil
if profile[PROFILE_HASH_joined] then
  stored_time(PK, 'joined', profile[PROFILE_HASH_joined])
  stored_time(PK, 'lastLogin', profile[PROFILE_HASH_lastLogin] or '')
  profile[PROFILE_HASH_lastLogin] = NOW_TEXT
  profile_writes = { 'lastLogin', NOW_TEXT }
else
  created = '1'
  profile = new_PROFILE_HASH()
  profile[PROFILE_HASH_email], profile[PROFILE_HASH_name] = ARGV[13], ARGV[14]
  profile[PROFILE_HASH_image], profile[PROFILE_HASH_role] = ARGV[15], ARGV[16]
  profile[PROFILE_HASH_joined], profile[PROFILE_HASH_lastLogin] = NOW_TEXT, NOW_TEXT
  if not s then
    s = default_subscription(d)
    new_subscription = subscription_fields(s)
  end
  if not a.reset then begin_allowance(a, d.credits, d.period, NOW_TEXT, NOW_TEXT, ARGV[7]) end
end
local out = full_reply('ok', created, profile, s and subscription_fields(s), a)
remember(out)
if profile_writes then
  redis.call('HSET', PK, unpack(profile_writes))
else
  write_hash(PK, fields_PROFILE_HASH(), profile)
end
if new_subscription then write_hash(SK, fields_SUBSCRIPTION_HASH(), new_subscription) end
return save(a, out)
