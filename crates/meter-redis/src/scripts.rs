//! The Lua scripts, one per mutation; the reason each must be atomic is
//! written at the top of its file in `scripts/`.

use redis::Script;

/// Lua source of the period math and helpers every credits script starts with.
pub const LUA_PRELUDE: &str = include_str!("scripts/prelude.lua");

fn with_prelude(body: &str) -> Script {
    Script::new(&format!("{LUA_PRELUDE}\n{body}"))
}

/// `deduct.lua`: KEYS credits[, idempotency]; ARGV now_ms, now_text, amount, fingerprint, window_ms.
pub fn deduct() -> Script {
    with_prelude(include_str!("scripts/deduct.lua"))
}

/// `grant.lua`: KEYS credits[, idempotency]; ARGV now_ms, now_text, amount, trial, fingerprint, window_ms.
pub fn grant() -> Script {
    with_prelude(include_str!("scripts/grant.lua"))
}

/// `reset.lua`: KEYS credits[, idempotency]; ARGV now_ms, now_text, total, period, next_reset_text,
/// fingerprint, window_ms.
pub fn reset() -> Script {
    with_prelude(include_str!("scripts/reset.lua"))
}
