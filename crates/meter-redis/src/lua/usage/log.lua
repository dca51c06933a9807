-- log.lua: a page of an account's usage event log, newest first, of one
-- metric or all, showing neither entries past the newest `max` nor entries
-- older than `oldest_ms` (lib/stream.lua). Reads only; reads at most the
-- shown entries (about `max`), in chunks.
-- KEYS: the log
-- ARGV: max entries, oldest_ms, before ('' for the newest page; an id,
-- exclusive), wanted (the page size + 1, to know whether a next page
-- exists), metric ('' for every metric)
-- Replies id, event, metadata of each entry found, at most `wanted`.
local key, before, wanted, metric = KEYS[1], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local floor = stream_floor(key, tonumber(ARGV[1]), tonumber(ARGV[2]))
local from = before == '' and '+' or '(' .. before
local out, found = {}, 0
local chunk = wanted
if metric ~= '' and chunk < 100 then chunk = 100 end
while found < wanted do
  local entries = redis.call('XREVRANGE', key, from, floor, 'COUNT', chunk)
  for _, entry in ipairs(entries) do
    local fields = entry[2]
    -- Fields: e = id|metric|value|time_ms, m = metadata (JSON).
    local event, meta = fields[2], fields[4]
    local _, _, of = string.find(event, '^[^|]*|([^|]*)|')
    if metric == '' or of == metric then
      out[#out + 1], out[#out + 2], out[#out + 3] = entry[1], event, meta
      found = found + 1
      if found == wanted then break end
    end
  end
  if #entries < chunk then break end
  from = '(' .. entries[#entries][1]
end
return out
