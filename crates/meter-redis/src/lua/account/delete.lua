-- delete.lua: delete every key of an account in one atomic step: its fixed
-- keys (keys.rs account_keys: the idempotency index last) and the idempotency records the index lists. meterd reads the index
-- first and passes the records as keys (a script declares every key it
-- touches); if the index changed since, nothing is deleted and meterd reads
-- it again. Replies whether the account had any
-- data key (idempotency records aside).
-- KEYS: the fixed keys, then the records
-- ARGV: how many fixed keys
local fixed = tonumber(ARGV[1])
local index = KEYS[fixed]
if redis.call('ZCARD', index) ~= #KEYS - fixed then return 'retry' end
for i = fixed + 1, #KEYS do
  if not redis.call('ZSCORE', index, KEYS[i]) then return 'retry' end
end
local existed = redis.call('EXISTS', unpack(KEYS, 1, fixed - 1)) > 0 and 1 or 0
-- In slices: Lua's unpack refuses many thousands of values at once.
for first = 1, #KEYS, 1000 do
  redis.call('DEL', unpack(KEYS, first, math.min(first + 999, #KEYS)))
end
return existed
