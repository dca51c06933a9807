-- get.lua: an account's profile, subscription and credits, read in one
-- atomic step; the credits settled by what fell due, nothing written.
-- KEYS: credits, grants, holds, history, profile, subscription
-- ARGV: now_ms, now_text, '', 1 (mutation.lua), history max entries, max
-- age ms (account.lua)
local a = load_account()
settle(a)
return full_reply('ok', '0', read_PROFILE_HASH(PK), read_SUBSCRIPTION_HASH(SK), a)
