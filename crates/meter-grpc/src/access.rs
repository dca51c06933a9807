//! Access control: bearer tokens, each with a name and a scope. A `read`
//! token may call the methods that only read ([`READ_METHODS`], and
//! `CheckQuota` without `consume`); a `write` token may call everything,
//! the rate limit checks included (they count). [`Guarded`] checks the `authorization: Bearer <token>`
//! metadata of every call before the service sees it and hands the
//! service the [`Caller`] (for the checks that depend on the request, as
//! `CheckQuota` with `consume`). Tokens are compared by their SHA-256
//! digests, every configured token each time, in constant time; only a
//! token's name is ever logged.

use std::{
    convert::Infallible,
    fmt,
    future::{Ready, ready},
    sync::{Arc, PoisonError, RwLock},
    task::{Context, Poll},
};

use futures_util::future::Either;
use tonic::{
    Status,
    body::Body,
    codegen::{Service, http},
    server::NamedService,
};

/// What a token may call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Calls that only read.
    Read,
    /// Every call.
    Write,
}

impl Scope {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "read" => Some(Self::Read),
            "write" => Some(Self::Write),
            _ => None,
        }
    }

    /// `read` or `write`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
        }
    }
}

/// The caller of a call, as its token says: put in the request's extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The token's name (never the token).
    pub name: Arc<str>,
    /// What it may call.
    pub scope: Scope,
}

/// One configured token: its name, scope and digest.
#[derive(PartialEq, Eq)]
struct Token {
    name: Arc<str>,
    scope: Scope,
    digest: [u8; 32],
}

/// The configured tokens; printed without their secrets.
#[derive(Default, PartialEq, Eq)]
pub struct Tokens(Vec<Token>);

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<(&str, &str)> = self
            .0
            .iter()
            .map(|t| (&*t.name, t.scope.as_str()))
            .collect();
        write!(f, "Tokens({names:?}, secrets redacted)")
    }
}

/// The shortest token accepted: guessing one must be hopeless.
pub const MIN_TOKEN_CHARS: usize = 24;

/// Why a token list was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{origin}, entry {entry}: {problem}")]
pub struct TokensError {
    /// Where the list came from (a file's path, or an environment variable).
    pub origin: String,
    /// The entry (line of a file, or position in a list), from 1.
    pub entry: usize,
    /// What is wrong with it (never the token itself).
    pub problem: String,
}

fn digest(token: &[u8]) -> [u8; 32] {
    let hash = ring::digest::digest(&ring::digest::SHA256, token);
    let mut out = [0; 32];
    out.copy_from_slice(hash.as_ref());
    out
}

impl Tokens {
    /// Tokens of a file: one per line, `NAME SCOPE TOKEN` separated by
    /// whitespace (`#` starts a comment); or of a comma-separated list of
    /// `NAME:SCOPE:TOKEN` (`list = true`, for an environment variable).
    pub fn parse(text: &str, origin: &str, list: bool) -> Result<Self, TokensError> {
        let entries: Vec<(usize, Vec<&str>)> = if list {
            text.split(',')
                .map(str::trim)
                .enumerate()
                .filter(|(_, e)| !e.is_empty())
                .map(|(i, e)| (i + 1, e.splitn(3, ':').collect()))
                .collect()
        } else {
            text.lines()
                .enumerate()
                .map(|(i, line)| (i + 1, without_comment(line)))
                .filter(|(_, line)| !line.trim().is_empty())
                .map(|(i, line)| (i, line.split_whitespace().collect()))
                .collect()
        };
        let mut tokens = Self::default();
        for (entry, parts) in entries {
            let fail = |problem: String| TokensError {
                origin: origin.to_owned(),
                entry,
                problem,
            };
            let [name, scope, token] = parts[..] else {
                return Err(fail(format!(
                    "expected {}, found {} part(s)",
                    if list {
                        "NAME:SCOPE:TOKEN"
                    } else {
                        "NAME SCOPE TOKEN"
                    },
                    parts.len()
                )));
            };
            // A field out of place may be the secret: errors name the
            // token only by a valid name shorter than any secret, and only
            // once the third field looks like a secret.
            if token.chars().count() < MIN_TOKEN_CHARS || token.chars().any(char::is_control) {
                return Err(fail(format!(
                    "the token (third field) must be at least {MIN_TOKEN_CHARS} printable \
                     characters (e.g. `openssl rand -hex 32`)"
                )));
            }
            if name.is_empty()
                || name.len() >= MIN_TOKEN_CHARS
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(fail(format!(
                    "the name (first field) must be 1 to {} letters, digits, '-', '_' or '.'",
                    MIN_TOKEN_CHARS - 1
                )));
            }
            let scope = Scope::parse(scope).ok_or_else(|| {
                fail(format!(
                    "token {name}: the scope (second field) is neither read nor write"
                ))
            })?;
            let digest = digest(token.as_bytes());
            if tokens.0.iter().any(|t| &*t.name == name) {
                return Err(fail(format!("token name {name} is used twice")));
            }
            if tokens.0.iter().any(|t| t.digest == digest) {
                return Err(fail(format!(
                    "token {name} has the same secret as another token"
                )));
            }
            tokens.0.push(Token {
                name: name.into(),
                scope,
                digest,
            });
        }
        Ok(tokens)
    }

    /// The tokens of both lists.
    pub fn merge(mut self, other: Self) -> Result<Self, TokensError> {
        for (i, token) in other.0.into_iter().enumerate() {
            let fail = |problem: String| TokensError {
                origin: "the second token list".into(),
                entry: i + 1,
                problem,
            };
            if self.0.iter().any(|t| t.name == token.name) {
                return Err(fail(format!("token name {} is in both lists", token.name)));
            }
            if self.0.iter().any(|t| t.digest == token.digest) {
                return Err(fail(format!(
                    "token {} has the same secret as a token of the first list",
                    token.name
                )));
            }
            self.0.push(token);
        }
        Ok(self)
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is none (access control off).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The caller a presented token names, comparing it with every token.
    pub fn caller(&self, presented: &str) -> Option<Caller> {
        let presented = digest(presented.as_bytes());
        let mut found = None;
        for token in &self.0 {
            let difference = token
                .digest
                .iter()
                .zip(presented)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if std::hint::black_box(difference) == 0 {
                found = Some(Caller {
                    name: Arc::clone(&token.name),
                    scope: token.scope,
                });
            }
        }
        found
    }
}

/// The methods a `read` token may call: they change nothing. (`CheckQuota`
/// with `consume` is refused to read tokens by its handler.) Every other
/// method, one added later included, needs `write`.
pub const READ_METHODS: &[&str] = &[
    "GetBalance",
    "ListHistory",
    "ListPlans",
    "GetAccount",
    "GetSubscription",
    "FindAccount",
    "GetStats",
    "GetUsage",
    "CheckQuota",
    "ComputeBill",
    "TopConsumers",
    "ListUsageEvents",
];

/// The scope a method needs: `read` for [`READ_METHODS`], `write` for
/// every other (the rate limit checks count, so they are writes).
pub fn scope_of(method: &str) -> Scope {
    if READ_METHODS.contains(&method) {
        Scope::Read
    } else {
        Scope::Write
    }
}

/// `line` up to a `#` that starts it or follows a space (a `#` inside a
/// token is part of it).
fn without_comment(line: &str) -> &str {
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        if c == '#' && previous.is_whitespace() {
            return &line[..i];
        }
        previous = c;
    }
    line
}

/// A refusal of a call whose caller may not make it: `PERMISSION_DENIED`
/// naming the token and what it lacks.
pub fn denied(caller: &Caller, what: &str) -> Status {
    Status::permission_denied(format!(
        "token {} has scope {}; {what} needs a write token",
        caller.name,
        caller.scope.as_str()
    ))
}

/// Whether the caller of a request that changes state may: with access
/// control off (no caller), or a write token. For handlers whose scope
/// depends on the request (`CheckQuota` with `consume`).
pub fn may_write<T>(request: &tonic::Request<T>, what: &str) -> Result<(), Status> {
    match request.extensions().get::<Caller>() {
        Some(caller) if caller.scope < Scope::Write => Err(denied(caller, what)),
        _ => Ok(()),
    }
}

/// The tokens in force, shared by every guarded service and replaced whole
/// when the tokens file changes: a call is checked against the tokens of
/// the moment it arrives.
#[derive(Clone, Debug, Default)]
pub struct TokenStore(Arc<RwLock<Arc<Tokens>>>);

impl TokenStore {
    /// A store holding `tokens`.
    pub fn new(tokens: Arc<Tokens>) -> Self {
        Self(Arc::new(RwLock::new(tokens)))
    }

    /// The tokens in force.
    pub fn current(&self) -> Arc<Tokens> {
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts `tokens` in force for every call from now on.
    pub fn replace(&self, tokens: Arc<Tokens>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = tokens;
    }
}

/// A gRPC service whose calls need a token of the method's scope, when
/// tokens are configured.
#[derive(Clone, Debug)]
pub struct Guarded<S> {
    inner: S,
    tokens: TokenStore,
    /// The scope every method needs, instead of its name's.
    scope: Option<Scope>,
}

impl<S> Guarded<S> {
    /// `service` behind `tokens` (none: every call passes), each method
    /// needing the scope its name says.
    pub fn new(service: S, tokens: TokenStore) -> Self {
        Self {
            inner: service,
            tokens,
            scope: None,
        }
    }

    /// `service` behind `tokens`, every method needing `scope`.
    pub fn with_scope(service: S, tokens: TokenStore, scope: Scope) -> Self {
        Self {
            inner: service,
            tokens,
            scope: Some(scope),
        }
    }
}

impl<S: NamedService> NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}

/// The caller of `request`, or why it may not call.
fn admit<B>(
    tokens: &Tokens,
    scope: Option<Scope>,
    request: &http::Request<B>,
) -> Result<Caller, Status> {
    let method = request.uri().path().rsplit('/').next().unwrap_or_default();
    let header = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let Some(header) = header else {
        return Err(Status::unauthenticated(
            "no token: send `authorization: Bearer <token>` metadata",
        ));
    };
    let presented = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            Status::unauthenticated("the authorization metadata is not `Bearer <token>`")
        })?;
    let caller = tokens
        .caller(presented)
        .ok_or_else(|| Status::unauthenticated("unknown token"))?;
    if caller.scope < scope.unwrap_or_else(|| scope_of(method)) {
        return Err(denied(&caller, method));
    }
    Ok(caller)
}

impl<S, B> Service<http::Request<B>> for Guarded<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Either<S::Future, Ready<Result<http::Response<Body>, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let tokens = self.tokens.current();
        if tokens.is_empty() {
            return Either::Left(self.inner.call(request));
        }
        match admit(&tokens, self.scope, &request) {
            Ok(caller) => {
                tracing::Span::current().record("caller", &*caller.name);
                request.extensions_mut().insert(caller);
                Either::Left(self.inner.call(request))
            }
            Err(status) => {
                tracing::debug!(path = %request.uri().path(), code = ?status.code(), "call refused");
                Either::Right(ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn files_and_lists_parse_and_name_their_mistakes() {
        let file = format!("# name scope token\nweb write {A}\n\ndash read {B} # the dashboard\n");
        let tokens = Tokens::parse(&file, "tokens.txt", false).expect("parses");
        assert_eq!(tokens.len(), 2);
        assert_eq!(
            tokens.caller(A).map(|c| (c.name.to_string(), c.scope)),
            Some(("web".to_owned(), Scope::Write))
        );
        assert_eq!(tokens.caller(B).map(|c| c.scope), Some(Scope::Read));
        assert_eq!(tokens.caller("nope"), None);
        assert!(!format!("{tokens:?}").contains(A), "never printed");

        let list = Tokens::parse(
            &format!("web:write:{A}, dash:read:{B}"),
            "METERD_TOKENS",
            true,
        )
        .expect("parses");
        assert_eq!(list.len(), 2);

        let bad = |text: &str, list: bool| {
            Tokens::parse(text, "t", list)
                .expect_err("refused")
                .to_string()
        };
        assert!(bad(&format!("web admin {A}"), false).contains("neither read nor write"));
        for misplaced in [format!("web {A} write"), format!("{A} web write")] {
            let error = bad(&misplaced, false);
            assert!(!error.contains(A), "the secret is never repeated: {error}");
        }
        let hashed = Tokens::parse(&format!("web write {A}#{B} # a comment"), "t", false)
            .expect("a # inside a token is part of it");
        assert!(hashed.caller(&format!("{A}#{B}")).is_some());
        assert!(hashed.caller(A).is_none());
        let twice = Tokens::parse(&format!("web write {A}"), "f", false)
            .expect("file")
            .merge(Tokens::parse(&format!("other:read:{A}"), "env", true).expect("env"));
        assert!(twice.is_err(), "one secret in both lists");
        assert!(bad("web write short", false).contains("at least 24"));
        assert!(bad(&format!("{} write {A}", "n".repeat(24)), false).contains("1 to 23"));
        assert!(bad(&format!("web write {A}\nweb read {B}"), false).contains("entry 2"));
        assert!(bad(&format!("web write {A}\nother read {A}"), false).contains("same secret"));
        assert!(bad("web:write", true).contains("NAME:SCOPE:TOKEN"));
        assert!(
            !bad(&format!("we b write {A}"), false).contains(A),
            "secrets never in errors"
        );
    }

    #[test]
    fn methods_need_the_scope_their_names_say() {
        for read in READ_METHODS {
            assert_eq!(scope_of(read), Scope::Read, "{read}");
        }
        for write in [
            "Deduct",
            "Grant",
            "Reserve",
            "UpdateSubscription",
            "DeleteAccount",
            "RecordUsage",
            "StreamUsage",
            "LinkBillingCustomer",
            "CheckRateLimit",
            "ShouldRateLimit",
            "GetAnythingNew",
            "ServerReflectionInfo",
        ] {
            assert_eq!(scope_of(write), Scope::Write, "{write}");
        }
        // Every read method exists: a rename cannot leave a stale entry.
        let api = crate::KnownMethods::from_descriptor_sets(&[meter_api::FILE_DESCRIPTOR_SET]);
        for read in READ_METHODS {
            assert!(api.has_method(read), "{read} is not a method of meter.v1");
        }
        assert!(!api.has_method("GetUsageRequest"));
    }
}
