-- stored.lua: reading stored values strictly, writing them canonically.
--
-- A stored count is a plain decimal integer from 0 to MAX_CREDITS: no sign,
-- no leading zero, no fraction, exponent, hex, 'inf' or 'nan' (Lua's
-- tonumber would take them all). A stored time is exactly the form meterd
-- writes, 'YYYY-MM-DDTHH:MM:SS.mmmZ', with a real calendar date. Anything
-- else is corrupt data: the script stops with a CORRUPT error, and since
-- every script reads and checks before its first write, nothing is touched.
--
-- Numbers go out through int(), because Redis turns a Lua number into text
-- with '%.17g' and tostring() gives '1e+15'.

local function corrupt(key, field, value)
  error({ err = 'CORRUPT ' .. key .. ' field ' .. field .. ' holds ' .. string.format('%q', value) })
end

local function int(n)
  return string.format('%d', n)
end

-- The count stored in `field` of `key`, or the error that stops the script.
local function stored_count(key, field, text)
  if #text > 16 or not (text == '0' or string.find(text, '^[1-9]%d*$')) then
    corrupt(key, field, text)
  end
  local n = tonumber(text)
  if n > MAX_CREDITS then corrupt(key, field, text) end
  return n
end

-- Checks that `text` is a time meterd could have written; returns it.
local function stored_time(key, field, text)
  if not string.find(text, '^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$') then
    corrupt(key, field, text)
  end
  local b = string.byte
  local function two(i) return (b(text, i) - 48) * 10 + b(text, i + 1) - 48 end
  local y = two(1) * 100 + two(3)
  local m, d = two(6), two(9)
  local last = 31
  if m == 2 then
    last = ((y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0) and 29 or 28
  elseif m == 4 or m == 6 or m == 9 or m == 11 then
    last = 30
  end
  if y < 1970 or m < 1 or m > 12 or d < 1 or d > last
    or two(12) > 23 or two(15) > 59 or two(18) > 59 then
    corrupt(key, field, text)
  end
  return text
end
