-- record.lua: count a batch of one account's usage events, in order, all
-- planned before any is written (usage.lua).
-- KEYS: seen ids, index, then the period hashes of the batch
-- ARGV: now_ms, window_ms, now_text, then per event: id, metric, value,
-- kind (sum or max), month key's position in KEYS, month expiry ms, day
-- key's position, day expiry ms
-- Replies one outcome per event: 'dup', 'overflow' or 'ok|month total|day total'.
-- Ids past their window first (a write no answer can see).
forget_seen()
local out = {}
for i = 4, #ARGV, 8 do
  out[#out + 1] = plan_event(ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3],
    KEYS[tonumber(ARGV[i + 4])], tonumber(ARGV[i + 5]), KEYS[tonumber(ARGV[i + 6])],
    tonumber(ARGV[i + 7]))
end
commit()
return out
