-- account.lua: an account's credits as the credits scripts hold them while
-- they run, the rules that change them (meter_core::CreditAccount, in Lua:
-- the contract suite holds the two to the same behaviour), and the writes
-- and reply that end every script.
--
-- KEYS[1] credits hash (layout CREDITS_HASH: the allowance and aggregates),
-- KEYS[2] grants hash (id -> kind|amount|left|held|created|expires),
-- KEYS[3] holds hash (id -> amount|expires|allowance|period|grant=n,...),
-- KEYS[4] history stream. ARGV[5] history max entries, ARGV[6] history max
-- age (ms); each script's own arguments follow from ARGV[7].
--
-- Everything is read and checked first and written last (save), so a corrupt
-- value or a refused call stops the script before any write.

local CK, GK, HK, XK = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local HISTORY_MAX, HISTORY_AGE = ARGV[5], tonumber(ARGV[6])

local function parse_grant(id, text)
  local kind, amount, left, held, created, expires =
    string.match(text, '^(%l+)|(%d+)|(%d+)|(%d+)|([^|]+)|([^|]*)$')
  if kind ~= 'paid' and kind ~= 'trial' and kind ~= 'promotion' and kind ~= 'compensation' then
    corrupt(GK, id, text)
  end
  return {
    id = id, kind = kind,
    amount = stored_count(GK, id, amount), left = stored_count(GK, id, left),
    held = stored_count(GK, id, held), created = stored_time(GK, id, created),
    expires = expires ~= '' and stored_time(GK, id, expires) or nil,
  }
end

local function grant_text(g)
  return g.kind .. '|' .. int(g.amount) .. '|' .. int(g.left) .. '|' .. int(g.held) .. '|'
    .. g.created .. '|' .. (g.expires or '')
end

local function parse_hold(id, text)
  local amount, expires, from, period, parts =
    string.match(text, '^(%d+)|([^|]+)|(%d+)|(%d+)|([^|]*)$')
  if not amount or not string.match(id, '^h%d+$') then corrupt(HK, id, text) end
  local h = {
    id = id, n = tonumber(string.sub(id, 2)), amount = stored_count(HK, id, amount),
    expires = stored_time(HK, id, expires), allowance = stored_count(HK, id, from),
    period = stored_count(HK, id, period), grants = {},
  }
  for gid, n in string.gmatch(parts, '([^,=]+)=(%d+)') do
    h.grants[#h.grants + 1] = { id = gid, n = stored_count(HK, id, n) }
  end
  return h
end

local function hold_text(h)
  local parts = {}
  for i, part in ipairs(h.grants) do parts[i] = part.id .. '=' .. int(part.n) end
  return int(h.amount) .. '|' .. h.expires .. '|' .. int(h.allowance) .. '|'
    .. int(h.period) .. '|' .. table.concat(parts, ',')
end

-- The deduct order: earliest expiry first, none last, then oldest, then id.
local function spend_order(a, b)
  if a.expires ~= b.expires then
    if not a.expires then return false end
    if not b.expires then return true end
    return a.expires < b.expires
  end
  if a.created ~= b.created then return a.created < b.created end
  return a.id < b.id
end

-- The account at the keys, nothing settled yet. a.exists is false for an
-- unknown account.
local function load_account()
  local f = read_CREDITS_HASH(CK)
  local total, last = f[CREDITS_HASH_total], f[CREDITS_HASH_lastUpdate]
  local a = {
    exists = (total or last) and true or false,
    total = total and stored_count(CK, 'total', total) or 0,
    used = f[CREDITS_HASH_used] and stored_count(CK, 'used', f[CREDITS_HASH_used]) or 0,
    last = last and stored_time(CK, 'lastUpdate', last) or nil,
    seq = f[CREDITS_HASH_seq] and stored_count(CK, 'seq', f[CREDITS_HASH_seq]) or 0,
    period_number = f[CREDITS_HASH_period] and stored_count(CK, 'period', f[CREDITS_HASH_period]) or 0,
    held = f[CREDITS_HASH_held] and stored_count(CK, 'held', f[CREDITS_HASH_held]) or 0,
    holds_next = f[CREDITS_HASH_holdsNext] and stored_time(CK, 'holdsNext', f[CREDITS_HASH_holdsNext]) or nil,
    reset = nil, anchor = nil, period = nil,
    grants = {}, holds = nil, log = {},
    dirty = false, grants_dirty = {}, holds_dirty = {},
  }
  a.had_holds_next = a.holds_next ~= nil
  local reset = f[CREDITS_HASH_resetDate]
  if reset then
    local period = f[CREDITS_HASH_resetPeriod]
    a.reset = stored_time(CK, 'resetDate', reset)
    a.anchor = stored_time(CK, 'resetAnchor', f[CREDITS_HASH_resetAnchor] or '')
    if period ~= 'day' and period ~= 'week' and period ~= 'month' and period ~= 'year' then
      corrupt(CK, 'resetPeriod', period or '')
    end
    a.period = period
  end
  local raw = redis.call('HGETALL', GK)
  for i = 1, #raw, 2 do a.grants[#a.grants + 1] = parse_grant(raw[i], raw[i + 1]) end
  if #a.grants > 1 then table.sort(a.grants, spend_order) end
  return a
end

-- The open holds, read once.
local function holds_of(a)
  if not a.holds then
    a.holds = {}
    local raw = redis.call('HGETALL', HK)
    for i = 1, #raw, 2 do a.holds[raw[i]] = parse_hold(raw[i], raw[i + 1]) end
  end
  return a.holds
end

local function remaining(a)
  local n = a.total - a.used
  if n < 0 then n = 0 end
  for _, g in ipairs(a.grants) do n = n + g.left end
  return n
end

local function expired(g)
  return g.expires ~= nil and NOW_TEXT >= g.expires
end

-- Logs a change at `time`; the caller's key and reason go on with tag().
local function note(a, time, kind, amount, change)
  if not a.last or a.last < time then a.last = time end
  a.dirty = true
  local e = { time = time, kind = kind, amount = amount, change = change, remaining = remaining(a) }
  a.log[#a.log + 1] = e
  return e
end

local function tag(e, key, reason)
  e.key, e.reason = key, reason
  return e
end

-- Drops grants neither available nor held.
local function prune(a)
  local kept = {}
  for _, g in ipairs(a.grants) do
    if g.left > 0 or g.held > 0 then kept[#kept + 1] = g else a.grants_dirty[g.id] = false end
  end
  a.grants = kept
end

local function find_grant(a, id)
  for _, g in ipairs(a.grants) do
    if g.id == id then return g end
  end
  return nil
end

-- Settles a hold (already removed): `keep` stays taken, in the order it was
-- taken; the rest goes back unless its grant expired or its period ended.
local function give_back(a, h, keep)
  local returned = 0
  local kept = math.min(keep, h.allowance)
  keep = keep - kept
  local back = math.min(h.allowance - kept, a.used)
  if back > 0 and a.period_number == h.period then
    a.used = a.used - back
    returned = back
  end
  for _, part in ipairs(h.grants) do
    local k = math.min(keep, part.n)
    keep = keep - k
    local g = find_grant(a, part.id)
    if g then
      g.held = g.held - part.n
      if not expired(g) then
        g.left = g.left + part.n - k
        returned = returned + part.n - k
      end
      a.grants_dirty[g.id] = true
    end
  end
  prune(a)
  return returned
end

-- Removes the open hold `h`, keeping `held` in step. holds_next may stay
-- earlier than the earliest hold left (never later): the call that reaches it
-- reads every hold and sets it exactly (settle, which passes `batch` and
-- sets it once at the end).
local function close_hold(a, h, batch)
  if a.holds then a.holds[h.id] = nil end
  a.holds_dirty[h.id] = false
  a.held = a.held - h.amount
  if a.held == 0 then
    a.holds_next = nil
  elseif a.holds and not batch then
    local first = nil
    for _, other in pairs(a.holds) do
      if not first or other.expires < first then first = other.expires end
    end
    a.holds_next = first
  end
end

-- Opens the hold `h`.
local function open_hold(a, h)
  if a.holds then a.holds[h.id] = h end
  a.holds_dirty[h.id] = h
  a.held = a.held + h.amount
  if not a.holds_next or h.expires < a.holds_next then a.holds_next = h.expires end
end

-- How many holds are open.
local function open_holds(a)
  if not a.holds then return redis.call('HLEN', HK) end
  local n = 0
  for _ in pairs(a.holds) do n = n + 1 end
  return n
end

-- The open hold `id`, or nil.
local function find_hold(a, id)
  if a.holds then return a.holds[id] end
  local text = redis.call('HGET', HK, id)
  return text and parse_hold(id, text) or nil
end

-- Applies what fell due by now: the period reset, expired holds, expired grants.
local function settle(a)
  if a.reset and NOW_TEXT >= a.reset then
    local t = period_math()
    local start, finish = t.period_containing(t.parse_time(a.anchor), a.period, NOW_MS)
    local change = math.min(a.used, a.total)
    a.used = 0
    a.period_number = a.period_number + 1
    a.reset = t.format_time(finish)
    note(a, t.format_time(start), 'period_reset', a.total, change)
  end
  if a.holds_next and NOW_TEXT >= a.holds_next then
    local due = {}
    for _, h in pairs(holds_of(a)) do
      if NOW_TEXT >= h.expires then due[#due + 1] = h end
    end
    -- Holds of the same expiry in the order they were made, as in Rust.
    table.sort(due, function(x, y)
      if x.expires ~= y.expires then return x.expires < y.expires end
      return x.n < y.n
    end)
    for _, h in ipairs(due) do
      close_hold(a, h, true)
      local e = note(a, h.expires, 'hold_expired', h.amount, give_back(a, h, 0))
      e.hold = h.id
    end
    -- holds_next may have been early (see close_hold): now it is exact.
    local first = nil
    for _, h in pairs(a.holds) do
      if not first or h.expires < first then first = h.expires end
    end
    if first ~= a.holds_next then
      a.holds_next = first
      a.dirty = true
    end
  end
  local gone = false
  for _, g in ipairs(a.grants) do
    if g.left > 0 and expired(g) then
      local left = g.left
      g.left = 0
      a.grants_dirty[g.id] = true
      local e = note(a, g.expires, 'expire', left, -left)
      e.grant = g.id
      gone = true
    end
  end
  if gone then prune(a) end
end

-- Takes `amount` (at most remaining): the allowance, then grants in order.
local function take(a, amount, hold)
  local from = math.min(amount, math.max(0, a.total - a.used))
  a.used = a.used + from
  local rest = amount - from
  local parts = {}
  for _, g in ipairs(a.grants) do
    if rest == 0 then break end
    local n = math.min(rest, g.left)
    if n > 0 then
      g.left = g.left - n
      if hold then g.held = g.held + n end
      rest = rest - n
      parts[#parts + 1] = { id = g.id, n = n }
      a.grants_dirty[g.id] = true
    end
  end
  prune(a)
  return from, parts
end

-- Writes what changed: the hash, grants, holds, then the history entries,
-- trimmed to the newest HISTORY_MAX and to HISTORY_AGE, the stream expiring
-- with its newest entry.
local function save(a)
  if not a.dirty then return end
  local fields = { 'total', int(a.total), 'used', int(a.used), 'lastUpdate', a.last or NOW_TEXT,
    'seq', int(a.seq), 'held', int(a.held), 'period', int(a.period_number) }
  if a.reset then
    fields[#fields + 1], fields[#fields + 2] = 'resetDate', a.reset
    fields[#fields + 1], fields[#fields + 2] = 'resetAnchor', a.anchor
    fields[#fields + 1], fields[#fields + 2] = 'resetPeriod', a.period
  end
  if a.holds_next then fields[#fields + 1], fields[#fields + 2] = 'holdsNext', a.holds_next end
  redis.call('HSET', CK, unpack(fields))
  if a.had_holds_next and not a.holds_next then redis.call('HDEL', CK, 'holdsNext') end
  for id, live in pairs(a.grants_dirty) do
    local g = live and find_grant(a, id)
    if g then redis.call('HSET', GK, id, grant_text(g)) else redis.call('HDEL', GK, id) end
  end
  for id, h in pairs(a.holds_dirty) do
    if h then redis.call('HSET', HK, id, hold_text(h)) else redis.call('HDEL', HK, id) end
  end
  if #a.log == 0 then return end
  for _, e in ipairs(a.log) do
    local entry = { 'time', e.time, 'kind', e.kind, 'amount', int(e.amount), 'change', int(e.change),
      'remaining', int(e.remaining) }
    for _, name in ipairs({ 'key', 'reason', 'grant', 'hold' }) do
      if e[name] and e[name] ~= '' then entry[#entry + 1], entry[#entry + 2] = name, e[name] end
    end
    -- Ids follow the caller's clock; one behind the newest entry (a clock
    -- that went back) continues after the newest instead.
    local added = redis.pcall('XADD', XK, 'MAXLEN', HISTORY_MAX, int(NOW_MS) .. '-*', unpack(entry))
    if type(added) == 'table' and added.err then
      local top = redis.call('XREVRANGE', XK, '+', '-', 'COUNT', 1)[1][1]
      local ms = string.match(top, '^(%d+)-')
      redis.call('XADD', XK, 'MAXLEN', HISTORY_MAX, ms .. '-*', unpack(entry))
    end
  end
  local oldest = NOW_MS - HISTORY_AGE
  if oldest > 0 then redis.call('XTRIM', XK, 'MINID', int(oldest)) end
  redis.call('PEXPIRE', XK, int(HISTORY_AGE))
end

-- The reply of a credits script: `status`, whether it `applied`, the
-- allowance and aggregates, then one text per live grant after the layout.
local function account_reply(status, applied, a)
  local out = new_CREDITS_REPLY()
  out[CREDITS_REPLY_status] = status
  out[CREDITS_REPLY_applied] = applied and '1' or '0'
  out[CREDITS_REPLY_replayed] = '0'
  if a and a.exists then
    out[CREDITS_REPLY_total] = int(a.total)
    out[CREDITS_REPLY_used] = int(a.used)
    out[CREDITS_REPLY_last_update] = a.last or ''
    out[CREDITS_REPLY_held] = int(a.held)
    if a.reset then
      out[CREDITS_REPLY_reset_date] = a.reset
      out[CREDITS_REPLY_reset_anchor] = a.anchor
      out[CREDITS_REPLY_reset_period] = a.period
    end
    for _, g in ipairs(a.grants) do
      if not expired(g) then out[#out + 1] = g.id .. '|' .. grant_text(g) end
    end
  end
  return out
end
