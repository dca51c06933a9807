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
local HISTORY_MAX, HISTORY_AGE_TEXT = ARGV[5], ARGV[6]

-- Cost: every function defined at a chunk's top level is a closure made
-- anew on every call, and each captured local costs a search of the
-- chunk's open upvalues. So the rules of grants and of holds are built only
-- by the calls that need them (grant_rules, hold_rules), once per call.

-- The rules of stored grants, built when an account has grants.
local function grant_rules(a)
  if a.grant_rules then return a.grant_rules end

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

  -- The deduct order: earliest expiry first, none last, then oldest, then
  -- id byte by byte (Lua's `<` on strings follows the server's locale, and
  -- Rust compares bytes; times are fixed-width digits, which any locale
  -- orders as bytes do).
  local function spend_order(x, y)
    if x.expires ~= y.expires then
      if not x.expires then return false end
      if not y.expires then return true end
      return x.expires < y.expires
    end
    if x.created ~= y.created then return x.created < y.created end
    local a, b = x.id, y.id
    for i = 1, math.min(#a, #b) do
      local p, q = string.byte(a, i), string.byte(b, i)
      if p ~= q then return p < q end
    end
    return #a < #b
  end

  local function expired(g)
    return g.expires ~= nil and NOW_TEXT >= g.expires
  end

  -- Drops grants neither available nor held.
  local function prune(account)
    local kept = {}
    for _, g in ipairs(account.grants) do
      if g.left > 0 or g.held > 0 then kept[#kept + 1] = g else account.grants_dirty[g.id] = false end
    end
    account.grants = kept
  end

  local function find(account, id)
    for _, g in ipairs(account.grants) do
      if g.id == id then return g end
    end
    return nil
  end

  a.grant_rules = {
    parse = parse_grant, text = grant_text, order = spend_order, expired = expired,
    prune = prune, find = find,
  }
  return a.grant_rules
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
    seq = 0, period_number = 0, held = 0, holds_next = nil,
    grants = {}, log = {}, dirty = false, grants_dirty = {}, holds_dirty = {}, f = f,
  }
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
  -- meta: seq|period|grants|held|holdsNext[|planAt|planTotal|planPeriod]
  -- (CREDITS_HASH). `grants` counts the grants hash's fields: at 0, the
  -- hash is not read. The plan part is the planned allowance, when there is one.
  local meta, count, planned = f[CREDITS_HASH_meta], nil, ''
  if meta then
    local seq, number, grants, held, next_hold, rest =
      string.match(meta, '^(%d+)|(%d+)|(%d+)|(%d+)|([^|]*)(.*)$')
    if not seq then corrupt(CK, 'meta', meta) end
    a.seq, a.period_number = stored_count(CK, 'meta', seq), stored_count(CK, 'meta', number)
    count, a.held = stored_count(CK, 'meta', grants), stored_count(CK, 'meta', held)
    a.holds_next = next_hold ~= '' and stored_time(CK, 'meta', next_hold) or nil
    if rest ~= '' then
      local at, total, period = string.match(rest, '^|([^|]+)|(%d+)|(%l+)$')
      if not at or (period ~= 'day' and period ~= 'week' and period ~= 'month' and period ~= 'year') then
        corrupt(CK, 'meta', meta)
      end
      a.planned = { at = stored_time(CK, 'meta', at), total = stored_count(CK, 'meta', total), period = period }
      planned = rest
    end
  end
  -- What was loaded, for save() to write only what changed.
  a.loaded = { a.total, a.used, a.seq, a.held, a.period_number, count, a.holds_next, planned }
  if count ~= 0 then
    local G = grant_rules(a)
    local raw = redis.call('HGETALL', GK)
    for i = 1, #raw, 2 do a.grants[#a.grants + 1] = G.parse(raw[i], raw[i + 1]) end
    if #a.grants > 1 then table.sort(a.grants, G.order) end
  end
  return a
end

local function remaining(a)
  local n = a.total - a.used
  if n < 0 then n = 0 end
  for _, g in ipairs(a.grants) do n = n + g.left end
  return n
end

-- Logs a change at `time`, with the caller's idempotency key and reason.
local function note(a, time, kind, amount, change, key, reason)
  if not a.last or a.last < time then a.last = time end
  a.dirty = true
  local e = { time = time, kind = kind, amount = amount, change = change, remaining = remaining(a),
    key = key, reason = reason }
  a.log[#a.log + 1] = e
  return e
end

-- The rules of holds, built by the calls that touch holds.
local function hold_rules(a)
  if a.hold_rules then return a.hold_rules end
  local function parse_hold(id, text)
    local amount, expires, from, period, parts =
      string.match(text, '^(%d+)|([^|]+)|(%d+)|(%d+)|([^|]*)$')
    if not amount or not string.match(id, '^h%d+$') then corrupt(HK, id, text) end
    local h = {
      id = id, n = tonumber(string.sub(id, 2)), amount = stored_count(HK, id, amount),
      expires = stored_time(HK, id, expires), allowance = stored_count(HK, id, from),
      period = stored_count(HK, id, period), grants = {},
    }
    local rebuilt = {}
    for gid, n in string.gmatch(parts, '([^,=]+)=(%d+)') do
      h.grants[#h.grants + 1] = { id = gid, n = stored_count(HK, id, n) }
      rebuilt[#rebuilt + 1] = gid .. '=' .. n
    end
    -- gmatch skips what does not match: the parts must be exactly what it read.
    if table.concat(rebuilt, ',') ~= parts then corrupt(HK, id, text) end
    return h
  end

  local function hold_text(h)
    local parts = {}
    for i, part in ipairs(h.grants) do parts[i] = part.id .. '=' .. int(part.n) end
    return int(h.amount) .. '|' .. h.expires .. '|' .. int(h.allowance) .. '|'
      .. int(h.period) .. '|' .. table.concat(parts, ',')
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

  -- Settles a hold (already removed): `keep` stays taken, in the order it was
  -- taken; the rest goes back unless its grant expired or its period ended.
  local function give_back(a, h, keep)
    local G = grant_rules(a)
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
      local g = G.find(a, part.id)
      if g then
        g.held = g.held - part.n
        if not G.expired(g) then
          g.left = g.left + part.n - k
          returned = returned + part.n - k
        end
        a.grants_dirty[g.id] = true
      end
    end
    G.prune(a)
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

  a.hold_rules = {
    hold_text = hold_text, holds_of = holds_of, give_back = give_back, close_hold = close_hold,
    open_hold = open_hold, open_holds = open_holds, find_hold = find_hold,
  }
  return a.hold_rules
end

-- Credits of the grants not expired by now, used or not.
local function granted(a)
  local n = 0
  if #a.grants > 0 then
    local G = grant_rules(a)
    for _, g in ipairs(a.grants) do
      if not G.expired(g) then n = n + g.amount end
    end
  end
  return n
end

-- Makes `total` credits each `period`, counted from `anchor` (text, at or
-- before now), the allowance: none used, a new period number. Capped so the
-- balance stays within MAX_CREDITS. Returns the entry it logs at `time`.
local function begin_allowance(a, total, period, anchor, time, key)
  local before = remaining(a)
  local cap = MAX_CREDITS - granted(a)
  if total > cap then total = cap end
  local t = period_math()
  local _, finish = t.period_containing(t.parse_time(anchor), period, NOW_MS)
  a.period_number = a.period_number + 1
  a.total, a.used, a.period, a.anchor, a.reset = total, 0, period, anchor, t.format_time(finish)
  a.exists = true
  local e = note(a, time, 'plan_change', total, 0, key, '')
  e.change = remaining(a) - before
  return e
end

-- Applies what fell due by now: a planned allowance whose time came, the
-- period reset, expired holds, expired grants.
local function settle(a)
  if a.planned and NOW_TEXT >= a.planned.at then
    local p = a.planned
    a.planned = nil
    begin_allowance(a, p.total, p.period, p.at, p.at, nil)
  end
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
    local H = hold_rules(a)
    for _, h in pairs(H.holds_of(a)) do
      if NOW_TEXT >= h.expires then due[#due + 1] = h end
    end
    -- Holds of the same expiry in the order they were made, as in Rust.
    table.sort(due, function(x, y)
      if x.expires ~= y.expires then return x.expires < y.expires end
      return x.n < y.n
    end)
    for _, h in ipairs(due) do
      H.close_hold(a, h, true)
      local e = note(a, h.expires, 'hold_expired', h.amount, H.give_back(a, h, 0))
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
  if #a.grants > 0 then
    local G, gone = grant_rules(a), false
    for _, g in ipairs(a.grants) do
      if g.left > 0 and G.expired(g) then
        local left = g.left
        g.left = 0
        a.grants_dirty[g.id] = true
        local e = note(a, g.expires, 'expire', left, -left)
        e.grant = g.id
        gone = true
      end
    end
    if gone then G.prune(a) end
  end
end

-- Takes `amount` (at most remaining): the allowance, then grants in order.
-- Returns the allowance's part and each grant's.
local function take(a, amount, hold)
  local from = math.min(amount, math.max(0, a.total - a.used))
  a.used = a.used + from
  local rest = amount - from
  local parts = {}
  if rest > 0 then
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
    grant_rules(a).prune(a)
  end
  return from, parts
end

-- XADDs the history entry `e` with `id` through `call` (redis.call or
-- redis.pcall): one field, `entry`, holding
-- time|kind|amount|change|remaining|key|grant|hold|reason (the reason last:
-- it may hold `|`).
local function append(call, e, id)
  return call('XADD', XK, 'MAXLEN', '~', HISTORY_MAX, id, 'entry',
    string.format('%s|%s|%d|%d|%d|%s|%s|%s|%s', e.time, e.kind, e.amount, e.change, e.remaining,
      e.key or '', e.grant or '', e.hold or '', e.reason or ''))
end

-- Writes what changed: the hash's changed fields, grants, holds, then the
-- history entries. The stream is trimmed to about HISTORY_MAX entries (`~`:
-- whole nodes at a time, several times cheaper than exact trimming; reads
-- never show more) and expires HISTORY_AGE after its newest entry; reads
-- never show an entry older than that, though it stays until trimmed.
--
-- Returns `out`, the call's reply, with one more value at its end when the
-- call settled something, `settled:<credits expired>:<holds expired>:<credits
-- renewed by period resets>`, for meterd's metrics. Scripts
-- remember `out` before they save, so no idempotency record holds it and
-- no replay answers it.
local function save(a, out)
  if not a.dirty then return out end
  -- Only the fields that changed (inline: a helper call per field costs
  -- as much as the check).
  local f, fields, n = a.f, {}, 0
  local was = a.loaded
  if not f[CREDITS_HASH_total] or was[1] ~= a.total then
    fields[n + 1], fields[n + 2], n = 'total', int(a.total), n + 2
  end
  if not f[CREDITS_HASH_used] or was[2] ~= a.used then
    fields[n + 1], fields[n + 2], n = 'used', int(a.used), n + 2
  end
  if f[CREDITS_HASH_lastUpdate] ~= a.last then
    fields[n + 1], fields[n + 2], n = 'lastUpdate', a.last or NOW_TEXT, n + 2
  end
  if a.reset and f[CREDITS_HASH_resetDate] ~= a.reset then
    fields[n + 1], fields[n + 2], n = 'resetDate', a.reset, n + 2
  end
  if a.reset and f[CREDITS_HASH_resetAnchor] ~= a.anchor then
    fields[n + 1], fields[n + 2], n = 'resetAnchor', a.anchor, n + 2
  end
  if a.reset and f[CREDITS_HASH_resetPeriod] ~= a.period then
    fields[n + 1], fields[n + 2], n = 'resetPeriod', a.period, n + 2
  end
  local planned = ''
  if a.planned then
    planned = '|' .. a.planned.at .. '|' .. int(a.planned.total) .. '|' .. a.planned.period
  end
  if not f[CREDITS_HASH_meta] or was[3] ~= a.seq or was[4] ~= a.held or was[5] ~= a.period_number
    or was[6] ~= #a.grants or was[7] ~= a.holds_next or was[8] ~= planned then
    fields[n + 1], fields[n + 2], n = 'meta', string.format('%d|%d|%d|%d|%s%s', a.seq,
      a.period_number, #a.grants, a.held, a.holds_next or '', planned), n + 2
  end
  if n > 0 then redis.call('HSET', CK, unpack(fields)) end
  if next(a.grants_dirty) then
    local G = grant_rules(a)
    for id, live in pairs(a.grants_dirty) do
      local g = live and G.find(a, id)
      if g then redis.call('HSET', GK, id, G.text(g)) else redis.call('HDEL', GK, id) end
    end
  end
  for id, h in pairs(a.holds_dirty) do
    if h then redis.call('HSET', HK, id, hold_rules(a).hold_text(h)) else redis.call('HDEL', HK, id) end
  end
  if #a.log == 0 then return out end
  -- Ids follow the caller's clock; one behind the newest entry (a clock
  -- that went back) continues after the newest instead.
  local id = int(NOW_MS) .. '-*'
  local expired, holds_expired, renewed = 0, 0, 0
  for _, e in ipairs(a.log) do
    local added = append(redis.pcall, e, id)
    if type(added) == 'table' and added.err then
      local top = redis.call('XREVRANGE', XK, '+', '-', 'COUNT', 1)[1][1]
      id = string.match(top, '^(%d+)-') .. '-*'
      append(redis.call, e, id)
    end
    local kind = e.kind
    if kind == 'expire' then
      expired = expired + e.amount
    elseif kind == 'hold_expired' then
      holds_expired = holds_expired + 1
    elseif kind == 'period_reset' then
      renewed = renewed + e.change
    end
  end
  redis.call('PEXPIRE', XK, HISTORY_AGE_TEXT)
  -- No '|' in it, unlike a grant's text (credits/mod.rs: settled_trailer).
  if expired + holds_expired + renewed > 0 then
    out[#out + 1] = string.format('settled:%d:%d:%d', expired, holds_expired, renewed)
  end
  return out
end

-- The reply of a credits script: `status`, whether it `applied`, the
-- allowance and aggregates, then one text per live grant after the layout
-- (and save may add what the call settled).
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
    if #a.grants > 0 then
      local G = grant_rules(a)
      for _, g in ipairs(a.grants) do
        if not G.expired(g) then out[#out + 1] = g.id .. '|' .. G.text(g) end
      end
    end
  end
  return out
end
