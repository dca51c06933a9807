//! Lua scripts as small libraries, and layouts that name what they read and reply.
//!
//! A script is its body plus the libraries it includes (`lua/lib/`), in
//! order, after a header that declares the constants and layouts it uses.
//! A [`Layout`] is a flat list of names declared once with [`layout!`]: Rust
//! decodes a reply or an `HMGET` into a struct of those names, and the
//! script gets the same list as a Lua table (`CREDITS_REPLY`), so neither
//! side counts positions.

use std::fmt::Write as _;

use redis::{Cmd, ToRedisArgs};

/// A Lua library that scripts include.
#[derive(Clone, Copy, Debug)]
pub struct Library {
    /// The file name, for the header of scripts that include it.
    pub name: &'static str,
    /// The Lua source.
    pub source: &'static str,
}

/// The Lua libraries shared by every context.
pub mod lib {
    use super::Library;

    /// Strict parsing of stored counts and times; `int()` for writing numbers.
    pub const STORED: Library = Library {
        name: "lib/stored.lua",
        source: include_str!("lua/lib/stored.lua"),
    };
    /// `read_hash` and `pack`: hashes and replies by layout.
    pub const LAYOUT: Library = Library {
        name: "lib/layout.lua",
        source: include_str!("lua/lib/layout.lua"),
    };
    /// The head of every mutation: the caller's clock and idempotency (`recall`, `remember`).
    /// Needs [`STORED`] and [`LAYOUT`].
    pub const MUTATION: Library = Library {
        name: "lib/mutation.lua",
        source: include_str!("lua/lib/mutation.lua"),
    };
    /// `period_math()`: the billing-period calendar of `meter_core::period`.
    pub const PERIOD: Library = Library {
        name: "lib/period.lua",
        source: include_str!("lua/lib/period.lua"),
    };
}

/// A flat list of named values: a hash's fields or a script's reply.
pub trait Layout: Sized {
    /// The Lua table the names are declared as in scripts, e.g. `CREDITS_REPLY`.
    const LUA_NAME: &'static str;
    /// The names, in order.
    const NAMES: &'static [&'static str];

    /// Builds the layout from values in [`Layout::NAMES`] order; an empty
    /// string counts as absent.
    fn from_values(values: Vec<Option<String>>) -> Result<Self, String>;
}

/// Declares a [`Layout`]: a struct with one `Option<String>` per name, and
/// the list of names scripts receive as a Lua table.
///
/// ```ignore
/// layout! {
///     /// The credits hash.
///     pub struct CreditsHash as "CREDITS_HASH" {
///         /// Credits of the period.
///         total = "total",
///         reset_date = "resetDate",
///     }
/// }
/// ```
#[macro_export]
macro_rules! layout {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident as $lua:literal {
            $($(#[$field_meta:meta])* $field:ident = $redis:literal),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        $vis struct $name {
            $($(#[$field_meta])* pub $field: Option<String>,)*
        }

        impl $crate::script::Layout for $name {
            const LUA_NAME: &'static str = $lua;
            const NAMES: &'static [&'static str] = &[$($redis),*];

            fn from_values(values: Vec<Option<String>>) -> Result<Self, String> {
                let count = values.len();
                if count != Self::NAMES.len() {
                    return Err(format!(
                        "{} has {} values, {count} came",
                        $lua,
                        Self::NAMES.len()
                    ));
                }
                let mut values = values.into_iter().map(|v| v.filter(|v| !v.is_empty()));
                Ok(Self { $($field: values.next().flatten(),)* })
            }
        }
    };
}

/// A script as Redis runs it: its full source (header, libraries, body) and
/// the SHA1 that `EVALSHA` calls it by.
#[derive(Debug)]
pub struct LuaScript {
    name: &'static str,
    source: String,
    hash: String,
}

/// The layouts a script uses: each layout's Lua name and names.
pub type LayoutNames = (&'static str, &'static [&'static str]);

impl LuaScript {
    /// The script `name` (its file, for errors): a header declaring
    /// `MAX_CREDITS` and each of `layouts`, then `libraries` in order, then `body`.
    pub fn new(
        name: &'static str,
        libraries: &[Library],
        layouts: &[LayoutNames],
        body: &str,
    ) -> Self {
        let mut source = format!(
            "-- meter: {name}\nlocal MAX_CREDITS = {}\n",
            meter_core::MAX_CREDITS
        );
        for (lua_name, names) in layouts {
            let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
            let _ = writeln!(source, "local {lua_name} = {{ {} }}", quoted.join(", "));
        }
        for library in libraries {
            let _ = write!(source, "\n-- {}\n{}", library.name, library.source);
        }
        let _ = write!(source, "\n-- {name}\n{body}");
        let hash = redis::Script::new(&source).get_hash().to_owned();
        Self { name, source, hash }
    }

    /// The script's name, e.g. `credits/deduct.lua`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The SHA1 of the source.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The full source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// `SCRIPT LOAD <source>`.
    pub fn load_command(&self) -> Cmd {
        let mut command = redis::cmd("SCRIPT");
        command.arg("LOAD").arg(&self.source);
        command
    }

    /// A call of this script on `keys`; add its arguments with [`ScriptCall::arg`].
    pub fn call<K: ToRedisArgs>(&'static self, keys: &[K]) -> ScriptCall {
        let mut command = redis::cmd("EVALSHA");
        command.arg(&self.hash).arg(keys.len()).arg(keys);
        ScriptCall {
            script: self,
            command,
        }
    }
}

/// One `EVALSHA` of a script, built key by key and argument by argument;
/// [`RedisStore::run`](crate::RedisStore::run) sends it.
#[derive(Debug)]
pub struct ScriptCall {
    pub(crate) script: &'static LuaScript,
    pub(crate) command: Cmd,
}

impl ScriptCall {
    /// Appends an argument (`ARGV[n]`).
    #[must_use]
    pub fn arg(mut self, value: impl ToRedisArgs) -> Self {
        self.command.arg(value);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    layout! {
        /// A test layout.
        struct Pair as "PAIR" {
            /// First.
            first = "first",
            /// Second.
            second_value = "secondValue",
        }
    }

    #[test]
    fn a_layout_decodes_by_name_and_refuses_the_wrong_count() {
        let pair = Pair::from_values(vec![Some("1".into()), Some(String::new())]).expect("fits");
        assert_eq!(pair.first.as_deref(), Some("1"));
        assert_eq!(pair.second_value, None, "an empty string is absent");
        assert!(Pair::from_values(vec![None]).is_err());
        assert_eq!(Pair::NAMES, ["first", "secondValue"]);
    }

    #[test]
    fn a_script_declares_its_layouts_then_its_libraries_then_its_body() {
        let script = LuaScript::new(
            "test.lua",
            &[lib::STORED],
            &[(Pair::LUA_NAME, Pair::NAMES)],
            "return 1",
        );
        let source = script.source();
        let layout = source.find("local PAIR = { 'first', 'secondValue' }");
        let library = source.find("-- lib/stored.lua");
        let body = source.find("-- test.lua\nreturn 1");
        assert!(layout < library && library < body, "{source}");
        assert_eq!(script.hash().len(), 40);
    }
}
