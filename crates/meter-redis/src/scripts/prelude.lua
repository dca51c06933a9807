-- prelude.lua: helpers shared by every credits script (prepended to each).
--
-- Cost: this chunk runs on every call, and each function defined at its top
-- level is a closure made anew each time. So the calendar math, needed only
-- when a period reset falls due, sits inside period_math() and is built only then.
--
-- Numbers: Lua numbers are doubles. Every credit amount stays below 2^53
-- (meter_core::MAX_CREDITS), so arithmetic on them is exact. Numbers are
-- always turned into strings with string.format('%d'), because Redis turns a
-- Lua number argument into text with '%.17g' and tostring() gives '1e+15'.
--
-- Time: meterd passes the current instant in (ARGV), as integer ms and as the
-- stored text 'YYYY-MM-DDTHH:MM:SS.mmmZ', so all replicas and the tests share
-- one clock. That text has a fixed width, so comparing two such strings
-- compares the instants: a due reset is found without parsing anything.

local MAX_CREDITS = 9007199254740991

-- The calendar math of meter_core::period, in Lua; a test checks they agree.
local function period_math()
  local MS_PER_DAY = 86400000

  local function days_from_civil(y, m, d)
    if m <= 2 then y = y - 1 end
    local era = math.floor(y / 400)
    local yoe = y - era * 400
    local mp = (m + 9) % 12
    local doy = math.floor((153 * mp + 2) / 5) + d - 1
    local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
    return era * 146097 + doe - 719468
  end

  local function civil_from_days(z)
    z = z + 719468
    local era = math.floor(z / 146097)
    local doe = z - era * 146097
    local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
    local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
    local mp = math.floor((5 * doy + 2) / 153)
    local d = doy - math.floor((153 * mp + 2) / 5) + 1
    local m = mp < 10 and mp + 3 or mp - 9
    local y = yoe + era * 400
    if m <= 2 then y = y + 1 end
    return y, m, d
  end

  local function days_in_month(y, m)
    if m == 2 then
      if (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0 then return 29 end
      return 28
    end
    if m == 4 or m == 6 or m == 9 or m == 11 then return 30 end
    return 31
  end

  -- The same time of day, k calendar months later, the day clamped to the month's end.
  local function add_months(ms, k)
    local days = math.floor(ms / MS_PER_DAY)
    local time_of_day = ms - days * MS_PER_DAY
    local y, m, d = civil_from_days(days)
    local index = y * 12 + (m - 1) + k
    local ny = math.floor(index / 12)
    local nm = index - ny * 12 + 1
    local nd = math.min(d, days_in_month(ny, nm))
    return days_from_civil(ny, nm, nd) * MS_PER_DAY + time_of_day
  end

  local function boundary(anchor, period, k)
    if period == 'day' then return anchor + k * MS_PER_DAY end
    if period == 'week' then return anchor + k * 7 * MS_PER_DAY end
    if period == 'month' then return add_months(anchor, k) end
    return add_months(anchor, 12 * k)
  end

  local math_of = {}

  -- The start and end of the period (counted from anchor) that contains now.
  function math_of.period_containing(anchor, period, now)
    local k
    if period == 'day' then
      k = math.floor((now - anchor) / MS_PER_DAY)
    elseif period == 'week' then
      k = math.floor((now - anchor) / (7 * MS_PER_DAY))
    else
      local ay, am = civil_from_days(math.floor(anchor / MS_PER_DAY))
      local ny, nm = civil_from_days(math.floor(now / MS_PER_DAY))
      k = (ny - ay) * 12 + nm - am
      if period == 'year' then k = math.floor(k / 12) end
    end
    if k < 0 then k = 0 end
    while k > 0 and boundary(anchor, period, k) > now do k = k - 1 end
    while boundary(anchor, period, k + 1) <= now do k = k + 1 end
    return boundary(anchor, period, k), boundary(anchor, period, k + 1)
  end

  function math_of.format_time(ms)
    local days = math.floor(ms / MS_PER_DAY)
    local rest = ms - days * MS_PER_DAY
    local y, m, d = civil_from_days(days)
    local h = math.floor(rest / 3600000)
    local mi = math.floor((rest - h * 3600000) / 60000)
    local s = math.floor((rest - h * 3600000 - mi * 60000) / 1000)
    return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', y, m, d, h, mi, s, rest % 1000)
  end

  function math_of.parse_time(text)
    if not text then return nil end
    local y, mo, d, h, mi, s, ms = string.match(text,
      '^(%d%d%d%d)-(%d%d)-(%d%d)T(%d%d):(%d%d):(%d%d)%.(%d%d%d)Z$')
    if not y then return nil end
    return days_from_civil(tonumber(y), tonumber(mo), tonumber(d)) * MS_PER_DAY
      + ((tonumber(h) * 60 + tonumber(mi)) * 60 + tonumber(s)) * 1000 + tonumber(ms)
  end

  return math_of
end

local function corrupt(key, field, value)
  return redis.error_reply('CORRUPT ' .. key .. ' field ' .. field .. ' holds ' .. tostring(value))
end

-- Reads the balance at key with any reset due by now applied. The stored
-- texts are kept as they are (b.reset, b.anchor, b.last); b.dirty lists the
-- fields a due reset changed. Returns (balance or nil when the account is
-- unknown, error reply or nil).
local function load_balance(key, now_ms, now_text)
  local f = redis.call('HMGET', key, 'total', 'used', 'resetDate', 'resetAnchor', 'resetPeriod', 'lastUpdate', 'isTrialCredits')
  if not f[1] then return nil, nil end
  local b = {
    total = tonumber(f[1]), used = tonumber(f[2] or '0'), reset = f[3], anchor = f[4],
    period = f[5], last = f[6], trial = f[7] == 'true',
  }
  if not b.total then return nil, corrupt(key, 'total', f[1]) end
  if not b.used then return nil, corrupt(key, 'used', f[2]) end
  if b.reset and now_text >= b.reset then
    local t = period_math()
    local anchor = t.parse_time(b.anchor)
    if not t.parse_time(b.reset) then return nil, corrupt(key, 'resetDate', b.reset) end
    if not anchor then return nil, corrupt(key, 'resetAnchor', b.anchor) end
    if b.period ~= 'day' and b.period ~= 'week' and b.period ~= 'month' and b.period ~= 'year' then
      return nil, corrupt(key, 'resetPeriod', b.period)
    end
    local start, finish = t.period_containing(anchor, b.period, now_ms)
    b.used = 0
    b.reset = t.format_time(finish)
    b.last = t.format_time(start)
    b.dirty = true
  end
  return b, nil
end

-- Writes the fields a script changed: `fields` (name, value pairs), plus the
-- reset ones when a due reset was applied.
local function save_balance(key, b, fields)
  if b.dirty then
    table.insert(fields, 'used'); table.insert(fields, string.format('%d', b.used))
    table.insert(fields, 'resetDate'); table.insert(fields, b.reset)
    table.insert(fields, 'lastUpdate'); table.insert(fields, b.last)
  end
  redis.call('HSET', key, unpack(fields))
end

-- The reply every credits script gives, in the order meter-redis parses it:
-- status, applied, total, used, resetDate, resetAnchor, resetPeriod, lastUpdate, trial, replayed.
local function reply(applied, b)
  if not b then return { 'ok', applied and '1' or '0', '0', '0', '', '', '', '', '0', '0' } end
  return {
    'ok', applied and '1' or '0', string.format('%d', b.total), string.format('%d', b.used),
    b.reset or '', b.reset and b.anchor or '', b.reset and b.period or '', b.last or '',
    b.trial and '1' or '0', '0',
  }
end

-- Idempotency: KEYS[2], when given, holds {fp = fingerprint, out = reply} as JSON.
-- Returns the reply to give instead of running, or nil to run.
local function recall(fingerprint)
  if not KEYS[2] then return nil end
  local stored = redis.call('GET', KEYS[2])
  if not stored then return nil end
  local record = cjson.decode(stored)
  if record.fp ~= fingerprint then return { 'conflict' } end
  record.out[10] = '1'
  return record.out
end

local function remember(fingerprint, window_ms, out)
  if KEYS[2] then
    redis.call('SET', KEYS[2], cjson.encode({ fp = fingerprint, out = out }), 'PX', window_ms)
  end
  return out
end
