-- record.lua: count a batch of one account's usage events, in order.
-- KEYS: seen ids, index, then the period hashes of the batch
-- ARGV: now_ms, window_ms, now_text, then per event: id, metric, value, kind (sum or
-- max), month key's position in KEYS, month expiry ms, day key's position,
-- day expiry ms
-- Replies one outcome per event: 'dup' or 'ok|month total|day total'.
forget_seen()
local out = {}
for i = 4, #ARGV, 8 do
  out[#out + 1] = record_event(ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3],
    KEYS[tonumber(ARGV[i + 4])], tonumber(ARGV[i + 5]), KEYS[tonumber(ARGV[i + 6])],
    tonumber(ARGV[i + 7]))
end
keep_alive()
return out
