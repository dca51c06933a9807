-- get.lua: an account's profile, subscription and credit keys as stored,
-- read in one atomic step; meterd settles the credits in Rust (as for a
-- balance read, credits/snapshot.lua). Writes nothing.
-- KEYS: credits, grants, holds, history, profile, subscription
return { read_PROFILE_HASH(KEYS[5]), read_SUBSCRIPTION_HASH(KEYS[6]), read_CREDITS_HASH(KEYS[1]),
  redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3]) }
