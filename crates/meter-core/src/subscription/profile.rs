//! Who an account's user is: the profile an app shows, checked field by field.

use crate::{InvalidArgument, Timestamp};

/// Longest email address, in characters (RFC 5321's path limit).
pub const MAX_EMAIL_CHARS: usize = 254;
/// Longest name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest image URL, in characters.
pub const MAX_IMAGE_CHARS: usize = 2048;
/// Longest role, in characters.
pub const MAX_ROLE_CHARS: usize = 64;

/// An account's profile; empty texts are unset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// The user's email address.
    pub email: String,
    /// The user's display name.
    pub name: String,
    /// The URL of the user's picture.
    pub image: String,
    /// The user's role in the app, e.g. `admin`.
    pub role: String,
    /// When the account was registered.
    pub joined: Timestamp,
    /// When `RegisterAccount` was last called for it.
    pub last_login: Timestamp,
}

/// Profile fields sent by a caller: `None` leaves a field as it is, an empty
/// text clears it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProfileFields {
    /// A new email address.
    pub email: Option<String>,
    /// A new name.
    pub name: Option<String>,
    /// A new image URL.
    pub image: Option<String>,
    /// A new role.
    pub role: Option<String>,
}

impl ProfileFields {
    /// Checks every given field; the error names the first bad one as
    /// `<prefix>.<field>` (`profile.email`).
    pub fn check(self, prefix: Prefix) -> Result<Self, InvalidArgument> {
        if let Some(email) = &self.email {
            check_email(prefix.email, email)?;
        }
        if let Some(name) = &self.name {
            check_text(prefix.name, name, MAX_NAME_CHARS)?;
        }
        if let Some(image) = &self.image {
            check_text(prefix.image, image, MAX_IMAGE_CHARS)?;
            if !image.is_empty()
                && (!(image.starts_with("https://") || image.starts_with("http://"))
                    || image.contains(char::is_whitespace))
            {
                return Err(InvalidArgument::new(
                    prefix.image,
                    "must be an http:// or https:// URL without spaces",
                ));
            }
        }
        if let Some(role) = &self.role {
            let ok = role.len() <= MAX_ROLE_CHARS
                && role
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'));
            if !ok {
                return Err(InvalidArgument::new(
                    prefix.role,
                    format!("must be at most {MAX_ROLE_CHARS} characters of A-Za-z0-9_.:-"),
                ));
            }
        }
        Ok(self)
    }

    /// Writes the given fields over `profile`.
    pub fn apply(&self, profile: &mut Profile) {
        let fields = [
            (&self.email, &mut profile.email),
            (&self.name, &mut profile.name),
            (&self.image, &mut profile.image),
            (&self.role, &mut profile.role),
        ];
        for (given, stored) in fields {
            if let Some(value) = given {
                value.clone_into(stored);
            }
        }
    }

    /// The fields for an idempotency fingerprint: unset and empty differ.
    pub fn fingerprint(&self) -> String {
        [&self.email, &self.name, &self.image, &self.role]
            .iter()
            .map(|f| {
                f.as_deref()
                    .map_or_else(|| "-".to_owned(), |v| format!("={v}"))
            })
            .collect::<Vec<_>>()
            .join("\u{1e}")
    }
}

/// The request field names of the profile's fields.
#[derive(Clone, Copy, Debug)]
pub struct Prefix {
    /// The email's field.
    pub email: &'static str,
    /// The name's field.
    pub name: &'static str,
    /// The image's field.
    pub image: &'static str,
    /// The role's field.
    pub role: &'static str,
}

impl Prefix {
    /// Fields inside a `profile` message (`RegisterAccount`).
    pub const NESTED: Self = Self {
        email: "profile.email",
        name: "profile.name",
        image: "profile.image",
        role: "profile.role",
    };
    /// Fields at the top of the request (`UpdateProfile`).
    pub const TOP: Self = Self {
        email: "email",
        name: "name",
        image: "image",
        role: "role",
    };
}

/// A text of at most `max` characters with no control characters.
fn check_text(field: &'static str, text: &str, max: usize) -> Result<(), InvalidArgument> {
    let chars = text.chars().count();
    if chars > max {
        return Err(InvalidArgument::new(
            field,
            format!("is {chars} characters long; at most {max} are accepted"),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(InvalidArgument::new(field, "contains a control character"));
    }
    Ok(())
}

/// An address `local@domain`: one `@`, no spaces, a dotted domain.
fn check_email(field: &'static str, email: &str) -> Result<(), InvalidArgument> {
    check_text(field, email, MAX_EMAIL_CHARS)?;
    if email.is_empty() {
        return Ok(());
    }
    let well_formed = email.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && local.len() <= 64
            && !domain.contains('@')
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
    }) && !email.contains(char::is_whitespace);
    if well_formed {
        Ok(())
    } else {
        Err(InvalidArgument::new(
            field,
            format!("{email:?} is not an email address like name@example.com"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(email: &str) -> ProfileFields {
        ProfileFields {
            email: Some(email.to_owned()),
            ..ProfileFields::default()
        }
    }

    #[test]
    fn emails_are_checked_for_shape() {
        for good in ["ada@example.com", "a.b+c@mail.example.org", ""] {
            assert!(fields(good).check(Prefix::NESTED).is_ok(), "{good}");
        }
        for bad in [
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a@b@example.com",
            "ada @example.com",
            "ada@example..com",
        ] {
            let err = fields(bad).check(Prefix::NESTED).expect_err(bad);
            assert_eq!(err.field, "profile.email", "{bad}");
        }
    }

    #[test]
    fn over_long_and_control_texts_name_the_field() {
        let long = ProfileFields {
            name: Some("n".repeat(100_000)),
            ..ProfileFields::default()
        };
        let err = long.check(Prefix::TOP).expect_err("too long");
        assert_eq!(err.field, "name");
        assert!(err.problem.contains("100000 characters"), "{}", err.problem);
        let image = ProfileFields {
            image: Some("javascript:alert(1)".into()),
            ..ProfileFields::default()
        };
        assert_eq!(image.check(Prefix::TOP).expect_err("scheme").field, "image");
        let role = ProfileFields {
            role: Some("admin role".into()),
            ..ProfileFields::default()
        };
        assert_eq!(role.check(Prefix::TOP).expect_err("space").field, "role");
    }

    #[test]
    fn only_given_fields_change() {
        let mut profile = Profile {
            email: "a@example.com".into(),
            name: "Ada".into(),
            image: String::new(),
            role: String::new(),
            joined: Timestamp::EPOCH,
            last_login: Timestamp::EPOCH,
        };
        ProfileFields {
            name: Some(String::new()),
            role: Some("admin".into()),
            ..ProfileFields::default()
        }
        .apply(&mut profile);
        assert_eq!(profile.email, "a@example.com");
        assert_eq!(profile.name, "");
        assert_eq!(profile.role, "admin");
    }
}
