-- get.lua: an account's stats hash, recent conversations and subscription
-- hash, read in one atomic step; writes nothing.
-- KEYS: stats, recent, seen, subscription
return { read_STATS_HASH(KEYS[1]), redis.call('LRANGE', KEYS[2], 0, -1),
  read_SUBSCRIPTION_HASH(KEYS[4]) }
