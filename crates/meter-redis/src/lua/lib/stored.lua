-- stored.lua: reading stored values strictly, writing them canonically.
--
-- A stored count is a plain decimal integer from 0 to MAX_CREDITS: no sign,
-- no leading zero, no fraction, exponent, hex, 'inf' or 'nan' (Lua's
-- tonumber would take them all). A stored time is exactly the form meterd
-- writes, 'YYYY-MM-DDTHH:MM:SS.mmmZ', with a real calendar date. Anything
-- else is corrupt data: the script stops with a CORRUPT error, and since
-- every script reads and checks before its first write, nothing is touched.
--
-- These run on every call, so they stay lean: one pattern match and plain
-- arithmetic, no helper calls (each Lua call costs about as much as a check).
-- Numbers go out through int(), because Redis turns a Lua number into text
-- with '%.17g' and tostring() gives '1e+15'.

local function corrupt(key, field, value)
  error({ err = 'CORRUPT ' .. key .. ' field ' .. field .. ' holds ' .. string.format('%q', value) })
end

local function int(n)
  return string.format('%d', n)
end

-- The count stored in `field` of `key`, or the error that stops the script.
-- Canonical means printing the number gives the text back: that refuses
-- '1.5', '1e3', '0x10', '007', '+5', ' 7', 'inf' and 'nan' in one step.
local function stored_count(key, field, text)
  if text == '0' then return 0 end
  local n = tonumber(text)
  if not n or n < 0 or n > MAX_CREDITS or string.format('%d', n) ~= text then
    corrupt(key, field, text)
  end
  return n
end

-- `text` if it is a time meterd could have written, or the error that stops the script.
local function stored_time(key, field, text)
  if string.find(text, '^%d%d%d%d%-[01]%d%-[0-3]%dT[0-2]%d:[0-5]%d:[0-5]%d%.%d%d%dZ$') then
    -- Digits are bytes 48..57: 11 * 48 = 528 and 1111 * 48 = 53328.
    local y1, y2, y3, y4, _, m1, m2, _, d1, d2, _, h1, h2 = string.byte(text, 1, 13)
    local y = y1 * 1000 + y2 * 100 + y3 * 10 + y4 - 53328
    local m, d, h = m1 * 10 + m2 - 528, d1 * 10 + d2 - 528, h1 * 10 + h2 - 528
    if y >= 1970 and m >= 1 and m <= 12 and d >= 1 and h <= 23 then
      if d <= 28 then return text end
      local last = 31
      if m == 2 then
        last = ((y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0) and 29 or 28
      elseif m == 4 or m == 6 or m == 9 or m == 11 then
        last = 30
      end
      if d <= last then return text end
    end
  end
  corrupt(key, field, text)
end
