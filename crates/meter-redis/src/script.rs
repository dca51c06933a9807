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
//! is assembled, not kept in locals. A misspelt name is caught then too:
//! assembly refuses any `<LAYOUT>_<name>` that the layout does not have.
//!
//! Absent reply values are `''`, the form every version of meter writes and
//! reads, so replicas of two versions with the same layout can replay each
//! other's idempotency records during a rolling deploy (a layout that
//! changes its order gets a new record namespace, as credits did: `v2`).

use std::{collections::HashMap, fmt::Write as _};

use redis::{Cmd, ToRedisArgs};

use crate::slot::key_slot;

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
    /// `stream_floor()`: where a newest-first read of a bounded log stops.
    /// Needs [`STORED`].
    pub const STREAM: Library = Library {
        name: "lib/stream.lua",
        source: include_str!("lua/lib/stream.lua"),
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
    writes: bool,
    /// Built with `credits/account.lua`, whose `save` may end the reply
    /// with what the call settled.
    settles: bool,
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
    ///
    /// Panics when the source names a layout position the layout does not
    /// have: a mistake in the scripts, caught when they are first built
    /// (every test that runs one).
    pub fn new(
        name: &'static str,
        libraries: &[Library],
        hashes: &[LayoutNames],
        replies: &[LayoutNames],
        body: &str,
    ) -> Self {
        let mut constants = HashMap::from([
            (
                "MAX_CREDITS".to_owned(),
                meter_core::MAX_CREDITS.to_string(),
            ),
            (
                "MAX_LIVE_GRANTS".to_owned(),
                meter_core::credits::MAX_LIVE_GRANTS.to_string(),
            ),
            (
                "MAX_OPEN_HOLDS".to_owned(),
                meter_core::credits::MAX_OPEN_HOLDS.to_string(),
            ),
        ]);
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
            let _ = writeln!(
                source,
                "local function fields_{layout}() return {{ {} }} end",
                quoted.join(", ")
            );
        }
        for (layout, names) in replies {
            let _ = writeln!(
                source,
                "local function new_{layout}() return {{ {} }} end",
                vec!["''"; names.len()].join(", ")
            );
        }
        for library in libraries {
            let _ = write!(source, "\n-- {}\n{}", library.name, library.source);
        }
        let _ = write!(source, "\n-- {name}\n{body}");
        let layouts: Vec<String> = hashes
            .iter()
            .chain(replies)
            .map(|(layout, _)| format!("{layout}_"))
            .collect();
        let source = substitute(&source, &constants, &layouts)
            .unwrap_or_else(|unknown| panic!("{name}: no layout has a position named {unknown}"));
        let hash = redis::Script::new(&source).get_hash().to_owned();
        let settles = libraries
            .iter()
            .any(|library| library.name == crate::credits::ACCOUNT.name);
        Self {
            name,
            source,
            hash,
            writes: true,
            settles,
        }
    }

    /// The same script, marked as one that never writes: its calls are not
    /// held for replicas (`--redis-wait-replicas`), as plain reads are not.
    #[must_use]
    pub fn reading_only(mut self) -> Self {
        self.writes = false;
        self
    }

    /// Whether the script may write.
    pub fn writes(&self) -> bool {
        self.writes
    }

    /// Whether its replies may end with what the call settled (a credits
    /// script that writes; see `count_settled`).
    pub fn settles(&self) -> bool {
        self.settles && self.writes
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

    /// A call of this script on `keys`, which must share one cluster slot
    /// (one account's hash tag); add its arguments with [`ScriptCall::arg`].
    pub fn call<K: AsRef<[u8]> + ToRedisArgs>(&'static self, keys: &[K]) -> ScriptCall {
        let slot = keys.first().map(|key| key_slot(key.as_ref()));
        debug_assert!(
            keys.iter().all(|key| Some(key_slot(key.as_ref())) == slot),
            "{}: keys in several cluster slots",
            self.name
        );
        let mut command = redis::cmd("EVALSHA");
        command.arg(&self.hash).arg(keys.len()).arg(keys);
        ScriptCall {
            script: self,
            command,
            slot,
        }
    }

    /// A call of this script on `keys` of several slots, sent where the
    /// first key lives: only for one Redis node ([`crate::RedisStore::is_cluster`]
    /// false), where keys of any slots meet.
    pub fn call_on_one_node<K: AsRef<[u8]> + ToRedisArgs>(&'static self, keys: &[K]) -> ScriptCall {
        let slot = keys.first().map(|key| key_slot(key.as_ref()));
        let mut command = redis::cmd("EVALSHA");
        command.arg(&self.hash).arg(keys.len()).arg(keys);
        ScriptCall {
            script: self,
            command,
            slot,
        }
    }
}

/// `source` with every identifier (outside comments and string literals)
/// that names a constant replaced by its value; `Err` with the first one
/// that starts like a layout position (`CREDITS_REPLY_`) but is not one.
fn substitute(
    source: &str,
    constants: &HashMap<String, String>,
    layouts: &[String],
) -> Result<String, String> {
    let is_part = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let bytes = source.as_bytes();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &source[i..];
        let end = match bytes[i] {
            // A comment, to the end of the line.
            b'-' if rest.starts_with("--") => rest.find('\n').map_or(source.len(), |n| i + n),
            // A string literal, escapes included.
            quote @ (b'\'' | b'"') => {
                let mut j = i + 1;
                while j < bytes.len() && bytes[j] != quote {
                    j += if bytes[j] == b'\\' { 2 } else { 1 };
                }
                (j + 1).min(bytes.len())
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let end = rest
                    .bytes()
                    .position(|c| !is_part(c))
                    .map_or(source.len(), |n| i + n);
                let word = &source[i..end];
                match constants.get(word) {
                    Some(value) => {
                        out.push_str(value);
                        i = end;
                        continue;
                    }
                    None if layouts
                        .iter()
                        .any(|prefix| word.starts_with(prefix.as_str())) =>
                    {
                        return Err(word.to_owned());
                    }
                    None => end,
                }
            }
            // A number (`0x1F`, `1e3`) never holds an identifier.
            c if c.is_ascii_digit() => rest
                .bytes()
                .position(|c| !is_part(c))
                .map_or(source.len(), |n| i + n),
            _ => i + rest.chars().next().map_or(1, char::len_utf8),
        };
        out.push_str(&source[i..end]);
        i = end;
    }
    Ok(out)
}

/// One `EVALSHA` of a script, built key by key and argument by argument;
/// [`RedisStore::run`](crate::RedisStore::run) sends it.
#[derive(Debug)]
pub struct ScriptCall {
    pub(crate) script: &'static LuaScript,
    pub(crate) command: Cmd,
    /// The cluster slot of its keys.
    pub(crate) slot: Option<u16>,
}

impl ScriptCall {
    /// The command as text, word by word (`EVALSHA`, the hash, the keys,
    /// the arguments): for tools that send it themselves (redis-benchmark).
    pub fn words(&self) -> Vec<String> {
        self.command
            .args_iter()
            .filter_map(|arg| match arg {
                redis::Arg::Simple(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
                _ => None,
            })
            .collect()
    }

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
    fn constants_are_replaced_as_whole_identifiers_outside_strings_and_comments() {
        let constants = HashMap::from([("A_x".to_owned(), "1".to_owned())]);
        let layouts = ["A_".to_owned()];
        assert_eq!(
            substitute(
                "f[A_x] = B_A_x .. 'A_x' .. \"A_x\" .. 'it\\'s A_x' -- A_x\nreturn A_x",
                &constants,
                &layouts
            ),
            Ok("f[1] = B_A_x .. 'A_x' .. \"A_x\" .. 'it\\'s A_x' -- A_x\nreturn 1".to_owned())
        );
        assert_eq!(
            substitute("return f[A_y]", &constants, &layouts),
            Err("A_y".to_owned()),
            "a misspelt position is refused when the script is assembled"
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
        let maker = source.find("local function new_PAIR() return { '', '' } end\n");
        let library = source.find("-- lib/stored.lua");
        let body = source.find("-- test.lua\nreturn 2 + 9007199254740991");
        assert!(
            reader.is_some() && reader < maker && maker < library && library < body,
            "{source}"
        );
        assert_eq!(script.hash().len(), 40);
    }
}
