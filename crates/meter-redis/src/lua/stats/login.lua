-- login.lua: count a login on the user's local day (meter_core::Stats::record_login).
-- KEYS: stats, recent, seen, subscription[, idempotency index, record]
-- ARGV: now_ms, now_text, fingerprint, window_ms (mutation.lua), the local
-- day and the day before it (YYYY-MM-DD)
local replay = recall(new_STATS_REPLY, STATS_REPLY_status, STATS_REPLY_replayed)
if replay then return replay end
local day, before = ARGV[5], ARGV[6]
local s = load_stats()
local first = not s.last or day > s.last
if first then
  if s.last == before then s.streak = s.streak + 1 else s.streak = 1 end
  s.days = s.days + 1
  if s.streak > s.longest then s.longest = s.streak end
  s.last = day
end
local out = stats_reply('ok', first and '1' or '0', s, {}, false)
remember(out)
if first then save_stats(s) end
return out
