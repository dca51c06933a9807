-- Checks the rate limits of one request, atomically: every check in turn
-- on working copies of its key's state (counted there when it fits, so a
-- key checked twice sees the first count), then, only if no enforced check
-- was refused, every changed state written back. Nothing is written for a
-- refused request. The arithmetic is meter_ratelimit::algorithm's.
--
-- Times are microseconds since the epoch: the Redis server's (TIME) unless
-- ARGV[1] gives one (tests with a fixed clock). Every key's expiry is
-- relative (PX), so it holds whichever clock is used.
--
-- KEYS, two per check: sliding window `rl:{K}:s` (entries 'time:units',
-- oldest first, one per bucket) and `rl:{K}:sn` (their sum); fixed window
-- `rl:{K}:f` ('window start:units') twice; token bucket `rl:{K}:t` (the
-- theoretical arrival time) twice.
-- ARGV: now (or ''), the number of checks, then per check: algorithm
-- ('s', 'f', 't'), limit, window (µs), cost, enforce ('1' or '0').
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

local function load(alg, key, key2, window)
  if alg == 's' then
    local s = { alg = alg, key = key, key2 = key2, used = 0, drop = 0, at = now }
    local len = redis.call('LLEN', key)
    if len == 0 then return s end
    local used = number(key2, redis.call('GET', key2) or '0')
    local tail_t, tail_n = pair(key, redis.call('LINDEX', key, -1))
    if tail_t > s.at then s.at = tail_t end
    -- Entries that left the window, from the oldest.
    local drop = 0
    while drop < len do
      local t, n = pair(key, redis.call('LINDEX', key, drop))
      if t + window > s.at then break end
      drop = drop + 1
      used = used - n
    end
    s.drop = drop
    s.len = len
    if drop < len and used > 0 then
      s.used = used
      s.tail_t, s.tail_n = tail_t, tail_n
    else
      s.drop = len
    end
    return s
  elseif alg == 'f' then
    local s = { alg = alg, key = key, start = 0, used = 0 }
    local stored = redis.call('GET', key)
    if stored then s.start, s.used = pair(key, stored) end
    return s
  else
    local stored = redis.call('GET', key)
    return { alg = alg, key = key, tat = stored and number(key, stored) or 0 }
  end
end

-- The outcome of `cost` on state `s`: allowed, remaining, reset, retry.
local function evaluate(s, limit, window, cost)
  if s.alg == 's' then
    local at = s.at
    local allowed = s.used + cost <= limit
    local retry = 0
    if not allowed then
      -- The oldest entries that must leave before `cost` fits.
      local need = s.used + cost - limit
      retry = window
      local entries = redis.call('LRANGE', s.key, s.drop, -1)
      for i = 1, #entries do
        local t, n = pair(s.key, entries[i])
        retry = t + window - at
        if n >= need then break end
        need = need - n
      end
    end
    local reset = 0
    if s.tail_t then reset = s.tail_t + window - at end
    local remaining = limit - s.used
    if remaining < 0 then remaining = 0 end
    return allowed, remaining, reset, retry
  elseif s.alg == 'f' then
    -- A new window once the counted one has ended; also when the counted
    -- one starts implausibly far ahead (a changed window).
    if s.start + window <= now or s.start > now + window then
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
local function commit(s, limit, window, cost)
  s.dirty = true
  if s.alg == 's' then
    local bucket = math.floor(window / 60)
    if bucket < 1 then bucket = 1 end
    local at = s.at
    if s.tail_t and math.floor(s.tail_t / bucket) == math.floor(at / bucket) then
      s.tail_t, s.tail_n = at, s.tail_n + cost
      if not s.pushed then s.replace = true end
    else
      s.tail_t, s.tail_n = at, cost
      s.pushed = true
    end
    s.used = s.used + cost
    s.window = window
    local remaining = limit - s.used
    if remaining < 0 then remaining = 0 end
    return remaining, window
  elseif s.alg == 'f' then
    s.used = s.used + cost
    s.window = window
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

local function millis(us)
  local ms = math.ceil(us / 1000)
  if ms < 1 then ms = 1 end
  return int(ms)
end

local function store(s)
  if s.alg == 's' then
    local ttl = millis(s.tail_t + s.window - s.at)
    if s.drop >= (s.len or 0) and s.len then
      redis.call('DEL', s.key)
    elseif s.drop > 0 then
      redis.call('LTRIM', s.key, s.drop, -1)
    end
    local entry = int(s.tail_t) .. ':' .. int(s.tail_n)
    if s.pushed then
      redis.call('RPUSH', s.key, entry)
    elseif s.replace then
      redis.call('LSET', s.key, -1, entry)
    end
    redis.call('PEXPIRE', s.key, ttl)
    redis.call('SET', s.key2, int(s.used), 'PX', ttl)
  elseif s.alg == 'f' then
    local ttl = millis(s.start + s.window - now)
    redis.call('SET', s.key, int(s.start) .. ':' .. int(s.used), 'PX', ttl)
  else
    redis.call('SET', s.key, int(s.tat), 'PX', millis(s.tat - now))
  end
end

local states = {}
local changed = {}
local reply = {}
local admitted = true
for i = 1, checks do
  local a = 3 + (i - 1) * 5
  local alg, limit, window, cost = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local key = KEYS[2 * i - 1]
  local s = states[key]
  if not s then
    s = load(alg, key, KEYS[2 * i], window)
    states[key] = s
  end
  local allowed, remaining, reset, retry = evaluate(s, limit, window, cost)
  local r = 4 * (i - 1)
  reply[r + 1], reply[r + 2], reply[r + 3], reply[r + 4] = 0, remaining, reset, retry
  if allowed then
    reply[r + 1] = 1
    if not s.dirty then changed[#changed + 1] = s end
    local after, reset_after = commit(s, limit, window, cost)
    -- Kept aside: the reply says the counted outcome only if the request is admitted.
    reply[r + 2] = { remaining, after }
    reply[r + 3] = { reset, reset_after }
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
  for i = 1, #changed do store(changed[i]) end
end
return reply
