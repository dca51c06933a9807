-- snapshot.lua: an account's credit keys as stored, read in one atomic step
-- (a balance read is never half before and half after another call).
-- meterd settles what fell due in Rust, by the rules the scripts follow.
-- KEYS: credits hash, grants hash, holds hash
return { read_CREDITS_HASH(KEYS[1]), redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3]) }
