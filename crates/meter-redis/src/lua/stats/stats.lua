-- stats.lua: an account's activity stats as the stats scripts hold them,
-- and the rules of meter_core::Stats in Lua (the contract suite holds the
-- two to the same behaviour).
--
-- KEYS[1] stats hash (STATS_HASH), KEYS[2] recent conversations (a list of
-- JSON objects {id, title, summary, time}, newest first), KEYS[3] the
-- conversation ids counted since the last reset (a set), KEYS[4] the
-- subscription hash (read for the plan). Everything is read and checked
-- first, written last.

local SK, RK, CK, UK = KEYS[1], KEYS[2], KEYS[3], KEYS[4]

-- The stored stats, checked; zeros without any.
local function load_stats()
  local f = read_STATS_HASH(SK)
  local function count(at, field)
    local text = f[at]
    if not text then return 0 end
    return stored_count(SK, field, text)
  end
  local s = {
    conversations = count(STATS_HASH_conversations, 'conversations'),
    days = count(STATS_HASH_daysActive, 'daysActive'),
    streak = count(STATS_HASH_loginStreak, 'loginStreak'),
    longest = count(STATS_HASH_longestStreak, 'longestStreak'),
    last = f[STATS_HASH_lastLoginDate] or nil,
  }
  if s.last then
    -- A real calendar date, checked as the date of a stored time.
    if not string.find(s.last, '^%d%d%d%d%-%d%d%-%d%d$') then corrupt(SK, 'lastLoginDate', s.last) end
    stored_time(SK, 'lastLoginDate', s.last .. 'T00:00:00.000Z')
  end
  local mood = f[STATS_HASH_moodScore]
  if mood then
    local whole, tenth = string.match(mood, '^(%d+)%.(%d)$')
    local tenths = whole and tonumber(whole) * 10 + tonumber(tenth)
    if not tenths or tenths > 100 or string.format('%d.%d', math.floor(tenths / 10), tenths % 10) ~= mood then
      corrupt(SK, 'moodScore', mood)
    end
    s.mood = tenths
  end
  return s
end

-- The recent conversations, decoded and checked.
local function load_recent()
  local raw = redis.call('LRANGE', RK, 0, -1)
  local recent = {}
  for i, text in ipairs(raw) do
    local ok, c = pcall(cjson.decode, text)
    if not ok or type(c) ~= 'table' or type(c.id) ~= 'string' or type(c.title) ~= 'string'
      or type(c.summary) ~= 'string' or type(c.time) ~= 'string' then
      corrupt(RK, tostring(i - 1), text)
    end
    stored_time(RK, tostring(i - 1), c.time)
    recent[i] = { text = text, time = c.time }
  end
  return recent
end

-- The stats hash's fields of `s`, in STATS_HASH order ('' for none).
local function stats_fields(s)
  local out = new_STATS_HASH()
  out[STATS_HASH_conversations] = int(s.conversations)
  if s.mood then
    out[STATS_HASH_moodScore] = string.format('%d.%d', math.floor(s.mood / 10), s.mood % 10)
  end
  out[STATS_HASH_daysActive] = int(s.days)
  out[STATS_HASH_loginStreak] = int(s.streak)
  out[STATS_HASH_longestStreak] = int(s.longest)
  out[STATS_HASH_lastLoginDate] = s.last or ''
  return out
end

-- The reply of a stats script: status, result, replayed, the stats hash's
-- fields, the subscription hash's (when `with_plan`; else empty), then the
-- recent conversations (JSON), newest first.
local function stats_reply(status, result, s, recent, with_plan)
  local out = new_STATS_REPLY()
  out[STATS_REPLY_status], out[STATS_REPLY_result], out[STATS_REPLY_replayed] = status, result, '0'
  for _, value in ipairs(stats_fields(s)) do out[#out + 1] = value end
  local sub = with_plan and read_SUBSCRIPTION_HASH(UK) or new_SUBSCRIPTION_HASH()
  for i = 1, #sub do out[#out + 1] = sub[i] or '' end
  for _, c in ipairs(recent) do out[#out + 1] = c.text end
  return out
end

-- Writes the stats hash: the set fields, the rest removed.
local function save_stats(s)
  local fields, names, set, gone = stats_fields(s), fields_STATS_HASH(), {}, {}
  for i, name in ipairs(names) do
    if fields[i] ~= '' then
      set[#set + 1] = name
      set[#set + 1] = fields[i]
    else
      gone[#gone + 1] = name
    end
  end
  if #gone > 0 then redis.call('HDEL', SK, unpack(gone)) end
  redis.call('HSET', SK, unpack(set))
end
