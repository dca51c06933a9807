-- conversation.lua: count a conversation once by its id and keep the
-- newest `keep` in the recent list (meter_core::Stats::record_conversation).
-- KEYS: stats, recent, seen, subscription[, idempotency index, record]
-- ARGV: now_ms, now_text, fingerprint, window_ms (mutation.lua), id, title,
-- summary, time, keep
local replay = recall(new_STATS_REPLY, STATS_REPLY_status, STATS_REPLY_replayed)
if replay then return replay end
local id, time, keep = ARGV[5], ARGV[8], tonumber(ARGV[9])
local s = load_stats()
local recent = load_recent()
local new = redis.call('SISMEMBER', CK, id) == 0
-- Where it goes: after every newer one (the later recorded first on a
-- tie); past `keep`, it is not kept.
local at = 1
while at <= #recent and recent[at].time > time do at = at + 1 end
local listed = new and at <= keep
if new then
  s.conversations = s.conversations + 1
  if listed then
    local entry = { text = cjson.encode({ id = id, title = ARGV[6], summary = ARGV[7], time = time }),
      time = time }
    table.insert(recent, at, entry)
  end
  while #recent > keep do table.remove(recent) end
end
local out = stats_reply('ok', new and '1' or '0', s, recent, true)
remember(out)
if new then
  redis.call('SADD', CK, id)
  save_stats(s)
  if listed then
    redis.call('DEL', RK)
    local texts = {}
    for i, c in ipairs(recent) do texts[i] = c.text end
    redis.call('RPUSH', RK, unpack(texts))
  end
end
return out
