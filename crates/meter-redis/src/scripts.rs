//! The Lua scripts, one per mutation; the reason each must be atomic is
//! written at the top of its file in `scripts/`.

use redis::{Cmd, Script};

/// Lua source of the period math and helpers every credits script starts with.
pub const LUA_PRELUDE: &str = include_str!("scripts/prelude.lua");

/// A credits script: its source, and the SHA1 that EVALSHA calls it by.
#[derive(Clone, Debug)]
pub struct LuaScript {
    script: Script,
    source: String,
}

impl LuaScript {
    /// The SHA1 of the source.
    pub fn hash(&self) -> &str {
        self.script.get_hash()
    }

    /// The script as redis-rs runs it (EVALSHA, then SCRIPT LOAD on NOSCRIPT).
    pub fn script(&self) -> &Script {
        &self.script
    }

    /// `SCRIPT LOAD <source>`.
    pub fn load_command(&self) -> Cmd {
        let mut command = redis::cmd("SCRIPT");
        command.arg("LOAD").arg(&self.source);
        command
    }
}

fn with_prelude(body: &str) -> LuaScript {
    let source = format!("{LUA_PRELUDE}\n{body}");
    LuaScript {
        script: Script::new(&source),
        source,
    }
}

/// `deduct.lua`: KEYS credits[, idempotency]; ARGV now_ms, now_text, amount, fingerprint, window_ms.
pub fn deduct() -> LuaScript {
    with_prelude(include_str!("scripts/deduct.lua"))
}

/// `grant.lua`: KEYS credits[, idempotency]; ARGV now_ms, now_text, amount, trial, fingerprint, window_ms.
pub fn grant() -> LuaScript {
    with_prelude(include_str!("scripts/grant.lua"))
}

/// `reset.lua`: KEYS credits[, idempotency]; ARGV now_ms, now_text, total, period, next_reset_text,
/// fingerprint, window_ms.
pub fn reset() -> LuaScript {
    with_prelude(include_str!("scripts/reset.lua"))
}
