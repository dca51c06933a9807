-- top.lua: raise an account in a top-consumer ranking to its new total
-- (never lower it: totals of a period only grow), keeping the ranking as
-- long as its period's usage. For Redis Cluster, where a ranking lives in
-- another slot than the account: meterd runs it after usage/record.lua.
-- KEYS: the ranking
-- ARGV: total, account, ttl ms
-- The TTL is looked at only when a member joins (the first makes the key).
if redis.call('ZADD', KEYS[1], 'GT', ARGV[1], ARGV[2]) == 1
  and redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
