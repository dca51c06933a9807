-- mood.lua: set the mood score (in tenths, 0..100).
-- KEYS: stats, recent, seen, subscription[, idempotency index, record]
-- ARGV: now_ms, now_text, fingerprint, window_ms (mutation.lua), tenths
local replay = recall(new_STATS_REPLY, STATS_REPLY_status, STATS_REPLY_replayed)
if replay then return replay end
local s = load_stats()
-- The recent list goes back as stored: nothing here reads into it.
local recent = {}
for i, text in ipairs(redis.call('LRANGE', RK, 0, -1)) do recent[i] = { text = text } end
s.mood = tonumber(ARGV[5])
local out = stats_reply('ok', '1', s, recent, true)
remember(out)
save_stats(s)
return out
