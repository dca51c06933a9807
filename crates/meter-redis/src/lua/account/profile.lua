-- profile.lua: change the given fields of a registered account's profile.
-- KEYS: profile[, idempotency index, record]
-- ARGV: now_ms, now_text, fingerprint, window_ms (mutation.lua), then
-- email, name, image, role: each '' to leave it, or '=' and the new value
-- Replies ACCOUNT_REPLY's status, result, replayed, then the profile
-- (status 'not_found' for an account never registered).
local replay = recall(new_ACCOUNT_REPLY, ACCOUNT_REPLY_status, ACCOUNT_REPLY_replayed)
if replay then return replay end
local key = KEYS[1]
local profile = read_PROFILE_HASH(key)
local out = new_ACCOUNT_REPLY()
out[ACCOUNT_REPLY_replayed] = '0'
if not profile[PROFILE_HASH_joined] then
  out[ACCOUNT_REPLY_status] = 'not_found'
  return out
end
stored_time(key, 'joined', profile[PROFILE_HASH_joined])
stored_time(key, 'lastLogin', profile[PROFILE_HASH_lastLogin] or '')
out[ACCOUNT_REPLY_status] = 'ok'
local given = { PROFILE_HASH_email, PROFILE_HASH_name, PROFILE_HASH_image, PROFILE_HASH_role }
for i = 1, #profile do profile[i] = profile[i] or '' end
for i, at in ipairs(given) do
  local value = ARGV[4 + i]
  if value ~= '' then profile[at] = string.sub(value, 2) end
end
for i = 1, #profile do out[#out + 1] = profile[i] end
remember(out)
write_hash(key, fields_PROFILE_HASH(), profile)
return out
