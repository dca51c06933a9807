-- Checks the rate limits of one request, atomically, in three steps:
--   1. read: every key's state is read and checked (a corrupt value stops
--      the script here, before any write);
--   2. tidy: sliding windows drop the buckets that left the window (the
--      header that says so is written whatever the request's outcome);
--   3. check: every check in turn on working copies of its key's state,
--      counted there when it fits (a key checked twice sees the first
--      count); only if no enforced check was refused are the counted
--      states written back.
-- The arithmetic is meter_ratelimit::algorithm's; the contract suite holds
-- the two to the same answers.
--
-- Times are microseconds since the epoch: the Redis server's (TIME) unless
-- ARGV[1] gives one (tests with a fixed clock). Every key's expiry is
-- relative (PX), so it holds whichever clock is used. A key's window is
-- part of its name, so one key is always counted with one window.
--
-- KEYS, two per check: sliding window `rl:{K}:s:<window>` (the header:
-- the sealed buckets' count and units, the open bucket, the oldest sealed
-- bucket's time) and `rl:{K}:sl:<window>` (the sealed buckets,
-- 'time:units', oldest first; at most 60); fixed window `rl:{K}:f:<window>`
-- ('window start:units') twice; token bucket `rl:{K}:t:<window>` (the
-- theoretical arrival time) twice.
-- ARGV: now (or ''), the number of checks, then per check: algorithm
-- ('s', 'f', 't'), limit, window (µs), cost (0: look without counting),
-- enforce ('1' or '0').
-- Reply, four integers per check: allowed (1/0), remaining, reset after
-- (µs), retry after (µs); remaining and reset after counting, when counted.

local now = tonumber(ARGV[1])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end
local checks = tonumber(ARGV[2])

local function number(key, text)
  local n = tonumber(text)
  if not n or n < 0 or n ~= math.floor(n) then corrupt(key, 'value', text) end
  return n
end

-- 'a:b' as two numbers.
local function pair(key, text)
  local sep = string.find(text, ':', 1, true)
  if not sep then corrupt(key, 'value', text) end
  return number(key, string.sub(text, 1, sep - 1)), number(key, string.sub(text, sep + 1))
end

local function millis(us)
  local ms = math.ceil(us / 1000)
  if ms < 1 then ms = 1 end
  return int(ms)
end

-- The sliding window's header: 'sealed count:sealed units:open time:open
-- units:oldest sealed time'.
local function header(s)
  return int(s.c) .. ':' .. int(s.sn) .. ':' .. int(s.tail_t) .. ':' .. int(s.tail_n) .. ':' .. int(s.oldest_t)
end

-- Step 1: a key's state as stored, checked; nothing written.
local function read(alg, key, key2, window)
  if alg == 's' then
    local s = { alg = alg, key = key, list = key2, window = window, c = 0, sn = 0, tail_n = 0, oldest_t = 0, at = now }
    local stored = redis.call('GET', key)
    if not stored then
      -- A list without its header (it cannot say what the list holds) goes
      -- when the key is next counted.
      s.stale = true
      return s
    end
    local c, sn, tt, tn, ot = string.match(stored, '^(%d+):(%d+):(%d+):(%d+):(%d+)$')
    if not c then corrupt(key, 'value', stored) end
    c, sn, tt, tn, ot = tonumber(c), tonumber(sn), tonumber(tt), tonumber(tn), tonumber(ot)
    if tt > s.at then s.at = tt end
    if tt + window <= s.at then
      -- Even the open bucket left the window: nothing counts any more.
      s.stale = true
      return s
    end
    s.c, s.sn, s.tail_t, s.tail_n, s.oldest_t = c, sn, tt, tn, ot
    return s
  elseif alg == 'f' then
    local s = { alg = alg, key = key, window = window, start = 0, used = 0 }
    local stored = redis.call('GET', key)
    if stored then s.start, s.used = pair(key, stored) end
    return s
  else
    local stored = redis.call('GET', key)
    return { alg = alg, key = key, window = window, tat = stored and number(key, stored) or 0 }
  end
end

-- Step 2: drops the sealed buckets that left the window. A list that
-- disagrees with its header (a bucket that is not the oldest the header
-- names) is read whole and the header rebuilt from it.
local function tidy(s)
  if s.alg ~= 's' or s.c == 0 or s.oldest_t + s.window > s.at then return end
  while s.c > 0 and s.oldest_t + s.window <= s.at do
    local entry = redis.call('LPOP', s.list)
    local t, n = 0, 0
    if entry then t, n = pair(s.list, entry) end
    if not entry or t ~= s.oldest_t then
      -- Rebuild from what the list holds, the entry just taken included.
      s.c, s.sn = 0, 0
      local rest = redis.call('LRANGE', s.list, 0, -1)
      if entry then table.insert(rest, 1, entry) end
      local keep = {}
      for i = 1, #rest do
        local rt, rn = pair(s.list, rest[i])
        if rt + s.window > s.at then
          keep[#keep + 1] = rest[i]
          if s.c == 0 then s.oldest_t = rt end
          s.c = s.c + 1
          s.sn = s.sn + rn
        end
      end
      redis.call('DEL', s.list)
      if #keep > 0 then
        redis.call('RPUSH', s.list, unpack(keep))
        redis.call('PEXPIRE', s.list, millis(s.tail_t + s.window - now))
      end
      break
    end
    s.sn = s.sn - n
    s.c = s.c - 1
    if s.c > 0 then
      local head = redis.call('LINDEX', s.list, 0)
      if not head then s.c = 0 break end
      s.oldest_t = pair(s.list, head)
    end
  end
  if s.c == 0 or s.sn < 0 then s.c, s.sn = 0, 0 end
  -- What the list lost reaches the header, counted or not. Expiries count
  -- from the server's clock (now), not the time the state counts as now.
  redis.call('SET', s.key, header(s), 'PX', millis(s.tail_t + s.window - now))
end

-- The outcome of `cost` on state `s`: allowed, remaining, reset, retry.
local function evaluate(s, limit, cost)
  local window = s.window
  if s.alg == 's' then
    local at = s.at
    local used = s.sn + s.tail_n
    local allowed = used + cost <= limit
    local retry = 0
    if not allowed then
      -- The oldest entries that must leave before `cost` fits.
      local need = used + cost - limit
      retry = window
      local entries = {}
      if s.c > 0 then entries = redis.call('LRANGE', s.list, 0, -1) end
      if s.sealed then entries[#entries + 1] = s.sealed end
      if s.tail_t then entries[#entries + 1] = int(s.tail_t) .. ':' .. int(s.tail_n) end
      for i = 1, #entries do
        local t, n = pair(s.list, entries[i])
        retry = t + window - at
        if n >= need then break end
        need = need - n
      end
      if retry < 0 then retry = 0 end
    end
    local reset = 0
    if s.tail_t then reset = s.tail_t + window - at end
    local remaining = limit - used
    if remaining < 0 then remaining = 0 end
    return allowed, remaining, reset, retry
  elseif s.alg == 'f' then
    -- A new window once the counted one has ended (a clock stepped back
    -- keeps counting in the stored one).
    if s.start + window <= now then
      s.start = now - now % window
      s.used = 0
    end
    local allowed = s.used + cost <= limit
    local reset = s.start + window - now
    local retry = 0
    if not allowed then retry = reset end
    local remaining = limit - s.used
    if remaining < 0 then remaining = 0 end
    return allowed, remaining, reset, retry
  else
    local emission = math.ceil(window / limit)
    local tolerance = emission * limit
    local base = s.tat
    if base < now then base = now end
    local next = base + cost * emission
    local allowed = next - now <= tolerance
    local retry = 0
    if not allowed then retry = next - tolerance - now end
    local ahead = base - now
    if ahead > tolerance then ahead = tolerance end
    return allowed, math.floor((tolerance - ahead) / emission), base - now, retry
  end
end

-- Counts `cost` on `s`; the outcome after counting.
local function commit(s, limit, cost)
  local window = s.window
  s.dirty = true
  if s.alg == 's' then
    local bucket = math.ceil(window / 60)
    local at = s.at
    if s.tail_t and math.floor(s.tail_t / bucket) == math.floor(at / bucket) then
      s.tail_n = s.tail_n + cost
    else
      if s.tail_t then
        -- The open bucket is sealed into the list.
        if s.c == 0 then s.oldest_t = s.tail_t end
        s.c = s.c + 1
        s.sn = s.sn + s.tail_n
        s.sealed = int(s.tail_t) .. ':' .. int(s.tail_n)
        s.sealed_t = s.tail_t
      end
      s.tail_n = cost
    end
    s.tail_t = at
    local remaining = limit - s.sn - s.tail_n
    if remaining < 0 then remaining = 0 end
    return remaining, window
  elseif s.alg == 'f' then
    s.used = s.used + cost
    local remaining = limit - s.used
    if remaining < 0 then remaining = 0 end
    return remaining, s.start + window - now
  else
    local emission = math.ceil(window / limit)
    local base = s.tat
    if base < now then base = now end
    s.tat = base + cost * emission
    local ahead = s.tat - now
    return math.floor((emission * limit - ahead) / emission), ahead
  end
end

local function store(s)
  if s.alg == 's' then
    if s.stale then redis.call('DEL', s.list) end
    if s.sealed then
      redis.call('RPUSH', s.list, s.sealed)
      redis.call('PEXPIRE', s.list, millis(s.sealed_t + s.window - now))
    end
    redis.call('SET', s.key, header(s), 'PX', millis(s.tail_t + s.window - now))
  elseif s.alg == 'f' then
    redis.call('SET', s.key, int(s.start) .. ':' .. int(s.used), 'PX', millis(s.start + s.window - now))
  else
    redis.call('SET', s.key, int(s.tat), 'PX', millis(s.tat - now))
  end
end

local states = {}
local order = {}
for i = 1, checks do
  local a = 3 + (i - 1) * 5
  local key = KEYS[2 * i - 1]
  if not states[key] then
    states[key] = read(ARGV[a], key, KEYS[2 * i], tonumber(ARGV[a + 2]))
    order[#order + 1] = states[key]
  end
end
for i = 1, #order do tidy(order[i]) end

local reply = {}
local admitted = true
for i = 1, checks do
  local a = 3 + (i - 1) * 5
  local limit, cost = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 3])
  local s = states[KEYS[2 * i - 1]]
  local allowed, remaining, reset, retry = evaluate(s, limit, cost)
  local r = 4 * (i - 1)
  reply[r + 1], reply[r + 2], reply[r + 3], reply[r + 4] = 0, remaining, reset, retry
  if allowed then
    reply[r + 1] = 1
    if cost > 0 then
      local after, reset_after = commit(s, limit, cost)
      -- Kept aside: the reply says the counted outcome only if the request is admitted.
      reply[r + 2] = { remaining, after }
      reply[r + 3] = { reset, reset_after }
    end
  elseif ARGV[a + 4] == '1' then
    admitted = false
  end
end
for r = 1, #reply do
  local v = reply[r]
  if type(v) == 'table' then
    if admitted then reply[r] = v[2] else reply[r] = v[1] end
  end
end
if admitted then
  for i = 1, #order do
    if order[i].dirty then store(order[i]) end
  end
end
return reply
