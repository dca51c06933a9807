//! Lua scripts as small libraries, and layouts that name what they read and reply.
//!
//! A script is its body plus the libraries it includes (`lua/lib/`), in
//! order, after a header generated from the [`Layout`]s it uses. A layout
//! is a flat list of names declared once with [`layout!`]: Rust decodes a
//! reply or an `HMGET` into a struct of those names, and the script refers
//! to each name's position as `CREDITS_HASH_total` or `CREDITS_REPLY_used`,
//! with `read_CREDITS_HASH(key)` (the fields, in order) for a hash and
//! `new_CREDITS_REPLY()` (a reply of absent values) for a reply. Neither
//! side counts positions by hand.
//!
//! Scripts run in full on every call, and every Lua helper call, table and
//! captured local costs about as much as a check. So the generated code is
//! positional (one array per hash read, one per reply), and the positions
//! and `MAX_CREDITS` are written into the source as numbers when the script
//! is assembled, not kept in locals. A misspelt name is an undefined
//! global, which Redis refuses loudly.

use std::{collections::HashMap, fmt::Write as _};

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
    /// The head of every mutation: the caller's clock and idempotency (`recall`, `remember`).
    /// Needs [`STORED`].
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

/// A layout as a script uses it: its Lua name and its names, from [`Layout`].
pub type LayoutNames = (&'static str, &'static [&'static str]);

/// The layouts of `L`, for [`LuaScript::new`].
pub fn names<L: Layout>() -> LayoutNames {
    (L::LUA_NAME, L::NAMES)
}

impl LuaScript {
    /// The script `name` (its file, for errors): a header declaring
    /// `MAX_CREDITS`, the positions and reader of each of `hashes`, the
    /// positions and maker of each of `replies`, then `libraries` in order,
    /// then `body`.
    pub fn new(
        name: &'static str,
        libraries: &[Library],
        hashes: &[LayoutNames],
        replies: &[LayoutNames],
        body: &str,
    ) -> Self {
        let mut constants = HashMap::from([(
            "MAX_CREDITS".to_owned(),
            meter_core::MAX_CREDITS.to_string(),
        )]);
        let mut source = format!("-- meter: {name}\n");
        for (layout, names) in hashes.iter().chain(replies) {
            for (i, field) in names.iter().enumerate() {
                constants.insert(format!("{layout}_{field}"), (i + 1).to_string());
            }
        }
        for (layout, names) in hashes {
            let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
            let _ = writeln!(
                source,
                "local function read_{layout}(key) return redis.call('HMGET', key, {}) end",
                quoted.join(", ")
            );
        }
        for (layout, names) in replies {
            let _ = writeln!(
                source,
                "local function new_{layout}() return {{ {} }} end",
                vec!["false"; names.len()].join(", ")
            );
        }
        for library in libraries {
            let _ = write!(source, "\n-- {}\n{}", library.name, library.source);
        }
        let _ = write!(source, "\n-- {name}\n{body}");
        let source = substitute(&source, &constants);
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

/// `source` with every identifier that names a constant replaced by its value.
fn substitute(source: &str, constants: &HashMap<String, String>) -> String {
    let is_start = |c: char| c.is_ascii_alphabetic() || c == '_';
    let is_part = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find(is_start) {
        // An identifier starts here unless it continues one (`x1_NAME`).
        let continues = rest[..start].ends_with(is_part);
        out.push_str(&rest[..start]);
        let word_len = rest[start..]
            .find(|c| !is_part(c))
            .unwrap_or(rest.len() - start);
        let word = &rest[start..start + word_len];
        match constants.get(word) {
            Some(value) if !continues => out.push_str(value),
            _ => out.push_str(word),
        }
        rest = &rest[start + word_len..];
    }
    out.push_str(rest);
    out
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

    #[test]
    fn constants_are_replaced_as_whole_identifiers_only() {
        let constants = HashMap::from([("A_x".to_owned(), "1".to_owned())]);
        assert_eq!(
            substitute("f[A_x] = A_xy .. B_A_x .. 'A_x'", &constants),
            "f[1] = A_xy .. B_A_x .. '1'"
        );
    }

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
            &[names::<Pair>()],
            &[names::<Pair>()],
            "return PAIR_secondValue + MAX_CREDITS",
        );
        let source = script.source();
        let reader = source.find(
            "local function read_PAIR(key) return redis.call('HMGET', key, 'first', 'secondValue') end\n",
        );
        let maker = source.find("local function new_PAIR() return { false, false } end\n");
        let library = source.find("-- lib/stored.lua");
        let body = source.find("-- test.lua\nreturn 2 + 9007199254740991");
        assert!(
            reader.is_some() && reader < maker && maker < library && library < body,
            "{source}"
        );
        assert_eq!(script.hash().len(), 40);
    }
}
