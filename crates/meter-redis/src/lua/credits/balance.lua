-- balance.lua: the credits hash (layout CREDITS_HASH) as the credits scripts
-- read it, and their reply (layout CREDITS_REPLY).

-- The balance at `key` with any reset due by now applied, or nil for an
-- unknown account. Every field is checked first: a corrupt one stops the
-- script before any write, including the idempotency record, since every
-- reply (a declined deduct's too) carries the fields back. b.due says a
-- reset fell due: `used`, `reset` and `last` then differ from what is stored.
local function load_balance(key)
  local f = read_CREDITS_HASH(key)
  local total, used, reset, trial = f[CREDITS_HASH_total], f[CREDITS_HASH_used], f[CREDITS_HASH_resetDate], f[CREDITS_HASH_isTrialCredits]
  if not total then return nil end
  if trial and trial ~= 'true' and trial ~= 'false' then corrupt(key, 'isTrialCredits', trial) end
  local last = f[CREDITS_HASH_lastUpdate]
  local b = {
    total = stored_count(key, 'total', total),
    used = used and stored_count(key, 'used', used) or 0,
    last = last and stored_time(key, 'lastUpdate', last) or nil,
    trial = trial == 'true',
    reset = nil, anchor = nil, period = nil, due = false,
  }
  if reset then
    local period = f[CREDITS_HASH_resetPeriod]
    b.reset = stored_time(key, 'resetDate', reset)
    b.anchor = stored_time(key, 'resetAnchor', f[CREDITS_HASH_resetAnchor] or '')
    if period ~= 'day' and period ~= 'week' and period ~= 'month' and period ~= 'year' then
      corrupt(key, 'resetPeriod', period or '')
    end
    b.period = period
    if NOW_TEXT >= reset then
      local t = period_math()
      local start, finish = t.period_containing(t.parse_time(b.anchor), period, NOW_MS)
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
  local out = new_CREDITS_REPLY()
  out[CREDITS_REPLY_status] = status
  out[CREDITS_REPLY_applied] = applied and '1' or '0'
  out[CREDITS_REPLY_replayed] = '0'
  if b then
    out[CREDITS_REPLY_total] = int(b.total)
    out[CREDITS_REPLY_used] = int(b.used)
    out[CREDITS_REPLY_last_update] = b.last or ''
    out[CREDITS_REPLY_trial] = b.trial and '1' or '0'
    if b.reset then
      out[CREDITS_REPLY_reset_date] = b.reset
      out[CREDITS_REPLY_reset_anchor] = b.anchor
      out[CREDITS_REPLY_reset_period] = b.period
    end
  end
  return out
end
