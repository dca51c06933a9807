-- record.lua: count a batch of one account's usage events, in order, all
-- planned before any is written (usage.lua).
-- KEYS: seen ids, index, log (usage.lua), then the period hashes
-- and (on one Redis node) the rankings of the batch
-- ARGV: usage.lua's, then per event: id, metric, value, kind (sum or max),
-- month key's position in KEYS, month expiry ms, day key's position, day
-- expiry ms, month ranking's and day ranking's numbers (usage.lua), the
-- metadata ('' for none: not logged), the event's time ms
-- Replies one outcome per event: 'dup|month total|day total', 'overflow'
-- or 'ok|month total|day total'.
-- Ids past their window first (a write no answer can see).
forget_seen()
local out = {}
for i = ARGS, #ARGV, 12 do
  out[#out + 1] = plan_event(ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3],
    KEYS[tonumber(ARGV[i + 4])], tonumber(ARGV[i + 5]), KEYS[tonumber(ARGV[i + 6])],
    tonumber(ARGV[i + 7]), tonumber(ARGV[i + 8]), tonumber(ARGV[i + 9]), ARGV[i + 10], ARGV[i + 11])
end
commit()
return out
