-- balance.lua: the credits hash (fields CREDITS_HASH) as the credits scripts
-- read it, and their reply (CREDITS_REPLY).

-- The balance at `key` with any reset due by now applied, or nil for an
-- unknown account. Every field is checked first (a corrupt one stops the
-- script before any write). b.due says a reset fell due: `used`, `resetDate`
-- and `lastUpdate` then differ from what is stored.
local function load_balance(key)
  local f = read_hash(key, CREDITS_HASH)
  if not f.total then return nil end
  local b = {
    total = stored_count(key, 'total', f.total),
    used = f.used and stored_count(key, 'used', f.used) or 0,
    last = f.lastUpdate and stored_time(key, 'lastUpdate', f.lastUpdate) or nil,
    trial = f.isTrialCredits == 'true',
  }
  if f.isTrialCredits and f.isTrialCredits ~= 'true' and f.isTrialCredits ~= 'false' then
    corrupt(key, 'isTrialCredits', f.isTrialCredits)
  end
  if f.resetDate then
    b.reset = stored_time(key, 'resetDate', f.resetDate)
    b.anchor = stored_time(key, 'resetAnchor', f.resetAnchor or '')
    b.period = f.resetPeriod
    if b.period ~= 'day' and b.period ~= 'week' and b.period ~= 'month' and b.period ~= 'year' then
      corrupt(key, 'resetPeriod', f.resetPeriod or '')
    end
    if NOW_TEXT >= b.reset then
      local t = period_math()
      local start, finish = t.period_containing(t.parse_time(b.anchor), b.period, NOW_MS)
      b.used = 0
      b.reset = t.format_time(finish)
      b.last = t.format_time(start)
      b.due = true
    end
  end
  return b
end

-- The reply of a credits script: `status`, whether it `applied`, and the balance `b`.
local function balance_reply(status, applied, b)
  local r = { status = status, applied = applied and '1' or '0', replayed = '0' }
  if b then
    r.total, r.used, r.last_update = int(b.total), int(b.used), b.last
    r.trial = b.trial and '1' or '0'
    if b.reset then
      r.reset_date, r.reset_anchor, r.reset_period = b.reset, b.anchor, b.period
    end
  end
  return pack(CREDITS_REPLY, r)
end
