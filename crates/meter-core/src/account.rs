//! Who an account is, and the token rule that every validated name shares.

use std::fmt;

use crate::InvalidArgument;

/// Longest accepted account id, in bytes (all accepted characters are ASCII).
pub const MAX_ACCOUNT_ID_LEN: usize = 128;

/// A user or an organisation: 1–128 characters of `A-Za-z0-9._@+-`.
///
/// The character set keeps ids safe inside a Redis key and its `{…}` hash tag.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(String);

impl AccountId {
    /// Validates `raw` as the request field `field`.
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, InvalidArgument> {
        check_token(
            field,
            raw,
            MAX_ACCOUNT_ID_LEN,
            |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '+' | '-'),
            "A-Za-z0-9._@+-",
        )?;
        Ok(Self(raw.to_owned()))
    }

    /// The id as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks that `raw` is 1 to `max_len` ASCII characters, each `allowed`.
pub(crate) fn check_token(
    field: &'static str,
    raw: &str,
    max_len: usize,
    allowed: impl Fn(char) -> bool,
    alphabet: &str,
) -> Result<(), InvalidArgument> {
    if raw.is_empty() {
        return Err(InvalidArgument::new(field, "is required"));
    }
    if let Some(bad) = raw.chars().find(|&c| !allowed(c)) {
        return Err(InvalidArgument::new(
            field,
            format!("contains {bad:?}; only the characters {alphabet} are accepted"),
        ));
    }
    // Every allowed character is ASCII, so bytes are characters here.
    if raw.len() > max_len {
        return Err(InvalidArgument::new(
            field,
            format!(
                "is {} characters long; at most {max_len} are accepted",
                raw.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn account_ids_of_every_allowed_character_are_accepted() {
        for id in ["u1", "org_42", "a.b-c+d@example.com", &"x".repeat(128)] {
            assert_eq!(
                AccountId::parse("account_id", id).map(|a| a.to_string()),
                Ok(id.to_owned())
            );
        }
    }

    #[test]
    fn bad_account_ids_name_the_field_and_the_problem() {
        let cases = [
            ("", "is required"),
            ("user:{1}", "contains ':'"),
            ("with space", "contains ' '"),
            ("é", "contains 'é'"),
        ];
        for (raw, expected) in cases {
            let err = AccountId::parse("account_id", raw).expect_err(raw);
            assert_eq!(err.field, "account_id");
            assert!(err.problem.contains(expected), "{raw:?}: {}", err.problem);
        }
        let long = AccountId::parse("account_id", &"x".repeat(129)).expect_err("too long");
        assert!(long.problem.contains("at most 128"), "{}", long.problem);
    }

    proptest! {
        #[test]
        fn an_account_id_is_valid_exactly_when_it_is_short_and_of_the_alphabet(raw in "\\PC{0,140}") {
            let expected = !raw.is_empty()
                && raw.len() <= MAX_ACCOUNT_ID_LEN
                && raw.chars().all(|c| c.is_ascii_alphanumeric() || "._@+-".contains(c));
            prop_assert_eq!(AccountId::parse("account_id", &raw).is_ok(), expected);
        }
    }
}
