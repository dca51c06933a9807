-- read.lua: the balance as of now, with what fell due applied in the reply
-- only: a read never writes.
-- KEYS: credits, grants, holds, history
-- ARGV: now_ms, now_text, '' (no idempotency), window_ms (mutation.lua),
-- history max entries, max age ms (account.lua)
local a = load_account()
if a.exists then settle(a) end
return account_reply('ok', false, a)
