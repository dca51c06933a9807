-- layout.lua: values by name. A layout is a list of names declared once in
-- Rust (meter-redis's `layout!`) and given to the script as a table, e.g.
-- CREDITS_HASH for a hash's fields or CREDITS_REPLY for a script's reply.

-- The hash at `key` as a table by field name (false where a field is absent).
local function read_hash(key, layout)
  local values = redis.call('HMGET', key, unpack(layout))
  local named = {}
  for i, name in ipairs(layout) do named[name] = values[i] end
  return named
end

-- The flat reply of `values` in the layout's order, false where absent.
local function pack(layout, values)
  local out = {}
  for i, name in ipairs(layout) do
    local v = values[name]
    if v == nil then v = false end
    out[i] = v
  end
  return out
end

-- The position of `name` in the layout.
local function position(layout, name)
  for i, n in ipairs(layout) do
    if n == name then return i end
  end
  error('layout has no ' .. name)
end
