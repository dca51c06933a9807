-- period.lua: the billing-period math of meter_core::period, in Lua; a test
-- checks the two agree on thousands of random cases.
--
-- Cost: each function defined at a chunk's top level is a closure made anew
-- on every call. The calendar math is needed only when a period reset falls
-- due, so it sits inside period_math() and is built only then.

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
