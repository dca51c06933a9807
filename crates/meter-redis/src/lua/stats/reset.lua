-- reset.lua: start the account's stats again from zero: the hash, the
-- recent list and the conversation ids seen.
-- KEYS: stats, recent, seen, subscription[, idempotency index, record]
-- ARGV: now_ms, now_text, fingerprint, window_ms (mutation.lua)
local replay = recall(new_STATS_REPLY, STATS_REPLY_status, STATS_REPLY_replayed)
if replay then return replay end
local out = stats_reply('ok', '1', { conversations = 0, days = 0, streak = 0, longest = 0 }, {}, true)
remember(out)
redis.call('DEL', SK, RK, CK)
return out
