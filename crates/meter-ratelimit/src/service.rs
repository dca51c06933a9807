//! The rate limit use cases: a check by key (inline limit or named
//! policy) and Envoy's descriptors matched against the limits file, with
//! shadow and fail modes applied.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use meter_core::{InvalidArgument, MeterError, StoreError};

use crate::{
    Algorithm, Check, FailMode, Limit, LimitsConfig, Match, Outcome, RateLimitStore, Rule, Unit,
    config::MAX_NAME,
    limit::{MAX_LIMIT, MAX_WINDOW, MIN_WINDOW},
};

/// Most descriptors in one ShouldRateLimit request.
pub const MAX_DESCRIPTORS: usize = 64;

/// Most entries in one descriptor.
pub const MAX_ENTRIES: usize = 16;

/// A CheckRateLimit request, as the transport read it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckRequest {
    /// What is limited.
    pub key: String,
    /// Inline limit: units per window (0 with a policy).
    pub limit: u64,
    /// Inline limit: the window (none with a policy).
    pub window: Option<Duration>,
    /// Units taken; 0 means 1.
    pub cost: u64,
    /// Inline limit: the algorithm (none: the sliding window).
    pub algorithm: Option<Algorithm>,
    /// A named policy instead of an inline limit; empty for none.
    pub policy: String,
    /// Count and report, never refuse.
    pub shadow: bool,
    /// What happens when the store cannot be reached (none: the policy's, or closed).
    pub fail: Option<FailMode>,
}

/// The answer to a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The units are admitted.
    pub allowed: bool,
    /// The limit applied.
    pub limit: Limit,
    /// Units still admitted in the window.
    pub remaining: u64,
    /// Until the count is back to zero.
    pub reset_after: Duration,
    /// When refused: until the same cost would be admitted.
    pub retry_after: Duration,
    /// Shadow mode: the limit would have refused.
    pub shadow_denied: bool,
    /// The store could not be reached and the limit fails open.
    pub failed_open: bool,
}

/// One descriptor of a ShouldRateLimit request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Descriptor {
    /// Its entries, `(key, value)`, in order.
    pub entries: Vec<(String, String)>,
    /// A limit the proxy sends instead of the configured one: requests per unit.
    pub limit_override: Option<(u64, Option<Unit>)>,
    /// Units this descriptor takes instead of the request's.
    pub hits_addend: Option<u64>,
}

/// The code of a descriptor or of a whole request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerdictCode {
    /// Under the limit (or shadow mode, or unlimited, or no limit matched).
    Ok,
    /// Over the limit.
    OverLimit,
}

/// The answer for one descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescriptorVerdict {
    /// OK or OVER_LIMIT.
    pub code: VerdictCode,
    /// The limit matched; none when no limit applies.
    pub rule: Option<Rule>,
    /// Units still admitted.
    pub remaining: u64,
    /// Until the count is back to zero.
    pub reset_after: Duration,
    /// When over the limit: until the same cost would be admitted.
    pub retry_after: Duration,
    /// Shadow mode: the limit would have refused.
    pub shadow_denied: bool,
}

/// The answer to a ShouldRateLimit request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvoyVerdict {
    /// OVER_LIMIT when any enforced limit refused.
    pub code: VerdictCode,
    /// One per descriptor, in order.
    pub statuses: Vec<DescriptorVerdict>,
    /// The store could not be reached and every limit matched fails open.
    pub failed_open: bool,
}

/// What the rate limiter has decided since it started, for logs and metrics.
#[derive(Debug, Default)]
pub struct RateLimitCounters {
    /// Checks (and descriptors) admitted by their limit.
    pub allowed: AtomicU64,
    /// Checks (and descriptors) refused.
    pub denied: AtomicU64,
    /// Checks (and descriptors) a limit in shadow mode would have refused.
    pub shadow_denied: AtomicU64,
    /// Checks (and requests) admitted unchecked because the store could not be reached.
    pub failed_open: AtomicU64,
}

/// The rate limit use cases over a store.
#[derive(Debug)]
pub struct RateLimiter<S> {
    store: S,
    limits: Arc<LimitsConfig>,
    counters: Arc<RateLimitCounters>,
    started: Instant,
    /// Seconds since `started` of the last fail-open warning, plus one (0: never).
    warned: AtomicU64,
}

impl<S: RateLimitStore> RateLimiter<S> {
    /// The rate limiter counting in `store` with the policies and domains of `limits`.
    pub fn new(store: S, limits: Arc<LimitsConfig>) -> Self {
        Self {
            store,
            limits,
            counters: Arc::default(),
            started: Instant::now(),
            warned: AtomicU64::new(0),
        }
    }

    /// Its counters.
    pub fn counters(&self) -> &RateLimitCounters {
        &self.counters
    }

    /// Counts `cost` units against the request's key and limit.
    pub async fn check(&self, request: CheckRequest) -> Result<Verdict, MeterError> {
        check_text("key", &request.key)?;
        let (rule, key) = self.rule_of(&request)?;
        let cost = request.cost.max(1);
        if cost > rule.limit.requests() {
            return Err(InvalidArgument::new(
                "cost",
                format!(
                    "{cost} is more than the limit ({}): it could never be admitted",
                    rule.limit.requests()
                ),
            )
            .into());
        }
        let check = Check {
            key,
            limit: rule.limit,
            cost,
            enforce: !rule.shadow,
        };
        let outcome = match self.store.check(vec![check]).await {
            Ok(outcomes) => one(outcomes)?,
            Err(error)
                if (rule.fail == FailMode::Open || rule.shadow) && is_unreachable(&error) =>
            {
                self.failed_open(&error);
                return Ok(Verdict {
                    allowed: true,
                    limit: rule.limit,
                    remaining: 0,
                    reset_after: Duration::ZERO,
                    retry_after: Duration::ZERO,
                    shadow_denied: false,
                    failed_open: true,
                });
            }
            Err(error) => return Err(error.into()),
        };
        self.count(&rule, outcome.allowed);
        Ok(Verdict {
            allowed: outcome.allowed || rule.shadow,
            limit: rule.limit,
            remaining: outcome.remaining,
            reset_after: Duration::from_micros(outcome.reset_after_us),
            retry_after: Duration::from_micros(outcome.retry_after_us),
            shadow_denied: rule.shadow && !outcome.allowed,
            failed_open: false,
        })
    }

    /// The rule of a check and the key it is counted under.
    fn rule_of(&self, request: &CheckRequest) -> Result<(Rule, String), InvalidArgument> {
        if !request.policy.is_empty() {
            let inline =
                request.limit != 0 || request.window.is_some() || request.algorithm.is_some();
            if inline {
                return Err(InvalidArgument::new(
                    "policy",
                    "give either a policy or limit, window and algorithm, not both",
                ));
            }
            let Some(policy) = self.limits.policy(&request.policy) else {
                let known = self.limits.policy_names();
                return Err(InvalidArgument::new(
                    "policy",
                    format!(
                        "no policy {:?} in the limits file (policies: {})",
                        truncated(&request.policy),
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            };
            let mut rule = policy.clone();
            rule.shadow |= request.shadow;
            rule.fail = request.fail.unwrap_or(rule.fail);
            let mut key = String::from("p:");
            escape_into(&mut key, &request.policy);
            key.push(':');
            escape_into(&mut key, &request.key);
            return Ok((rule, key));
        }
        if !(1..=MAX_LIMIT).contains(&request.limit) {
            return Err(InvalidArgument::new(
                "limit",
                format!(
                    "{} is not from 1 to {MAX_LIMIT}; set limit and window, or a policy",
                    request.limit
                ),
            ));
        }
        let Some(window) = request
            .window
            .filter(|w| (MIN_WINDOW..=MAX_WINDOW).contains(w))
        else {
            return Err(InvalidArgument::new(
                "window",
                "must be from 1ms to 366d (e.g. {\"seconds\": 60})",
            ));
        };
        let algorithm = request.algorithm.unwrap_or_default();
        let limit = Limit::new(request.limit, window, algorithm)
            .map_err(|problem| InvalidArgument::new("limit", problem))?;
        let rule = Rule {
            limit,
            name: "inline".to_owned(),
            shadow: request.shadow,
            fail: request.fail.unwrap_or_default(),
            unit: None,
        };
        let mut key = String::from("k:");
        escape_into(&mut key, &request.key);
        Ok((rule, key))
    }

    /// Checks a ShouldRateLimit request: every descriptor against the
    /// limit it matches in `domain`, in one atomic store call.
    pub async fn should_rate_limit(
        &self,
        domain: &str,
        descriptors: &[Descriptor],
        hits_addend: u64,
    ) -> Result<EnvoyVerdict, MeterError> {
        check_text("domain", domain)?;
        if descriptors.is_empty() || descriptors.len() > MAX_DESCRIPTORS {
            return Err(InvalidArgument::new(
                "descriptors",
                format!(
                    "send 1 to {MAX_DESCRIPTORS} descriptors, not {}",
                    descriptors.len()
                ),
            )
            .into());
        }
        let mut plans: Vec<Plan> = Vec::with_capacity(descriptors.len());
        for (i, descriptor) in descriptors.iter().enumerate() {
            let plan = self
                .plan(domain, descriptor, hits_addend)
                .map_err(|e| e.at("descriptors", i))?;
            plans.push(plan);
        }
        // A descriptor blocked outright (an override of 0 requests) refuses
        // the request: the others are only looked at, not counted.
        let blocked = plans
            .iter()
            .any(|p| matches!(p, Plan::Blocked(rule) if !rule.as_ref().is_some_and(|r| r.shadow)));
        let checks: Vec<Check> = plans
            .iter()
            .filter_map(|plan| match plan {
                Plan::Check { rule, key, cost } => Some(Check {
                    key: key.clone(),
                    limit: rule.limit,
                    cost: if blocked { 0 } else { *cost },
                    enforce: !rule.shadow,
                }),
                _ => None,
            })
            .collect();
        let outcomes = if checks.is_empty() {
            Vec::new()
        } else {
            match self.store.check(checks).await {
                Ok(outcomes) => outcomes,
                // Refused anyway: the store's answer changes nothing.
                Err(error) if blocked && is_unreachable(&error) => {
                    let statuses = plans
                        .into_iter()
                        .map(|plan| match plan {
                            Plan::Blocked(rule) => self.blocked(rule),
                            other => DescriptorVerdict::ok(other.into_rule(), 0),
                        })
                        .collect();
                    return Ok(EnvoyVerdict {
                        code: VerdictCode::OverLimit,
                        statuses,
                        failed_open: false,
                    });
                }
                Err(error) if is_unreachable(&error) && plans.iter().all(Plan::fails_open) => {
                    self.failed_open(&error);
                    let statuses = plans
                        .into_iter()
                        .map(|plan| DescriptorVerdict::ok(plan.into_rule(), 0))
                        .collect();
                    return Ok(EnvoyVerdict {
                        code: VerdictCode::Ok,
                        statuses,
                        failed_open: true,
                    });
                }
                Err(error) => return Err(error.into()),
            }
        };
        let mut outcomes = outcomes.into_iter();
        let mut code = VerdictCode::Ok;
        let mut statuses = Vec::with_capacity(plans.len());
        for plan in plans {
            let (rule, outcome) = match plan {
                Plan::Unmatched => {
                    statuses.push(DescriptorVerdict::ok(None, 0));
                    continue;
                }
                Plan::Unlimited => {
                    statuses.push(DescriptorVerdict::ok(None, u64::MAX));
                    continue;
                }
                Plan::Blocked(rule) => {
                    let status = self.blocked(rule);
                    if status.code == VerdictCode::OverLimit {
                        code = VerdictCode::OverLimit;
                    }
                    statuses.push(status);
                    continue;
                }
                Plan::Check { rule, .. } => {
                    let outcome = outcomes.next().ok_or_else(|| {
                        StoreError::Protocol("fewer rate limit outcomes than checks".into())
                    })?;
                    (rule, outcome)
                }
            };
            self.count(&rule, outcome.allowed);
            let over = !outcome.allowed && !rule.shadow;
            if over {
                code = VerdictCode::OverLimit;
            }
            statuses.push(DescriptorVerdict {
                code: if over {
                    VerdictCode::OverLimit
                } else {
                    VerdictCode::Ok
                },
                shadow_denied: rule.shadow && !outcome.allowed,
                rule: Some(rule),
                remaining: outcome.remaining,
                reset_after: Duration::from_micros(outcome.reset_after_us),
                retry_after: Duration::from_micros(outcome.retry_after_us),
            });
        }
        Ok(EnvoyVerdict {
            code,
            statuses,
            failed_open: false,
        })
    }

    /// What to do with a descriptor: its limit and key, or why none applies.
    fn plan(
        &self,
        domain: &str,
        descriptor: &Descriptor,
        hits_addend: u64,
    ) -> Result<Plan, InvalidArgument> {
        if descriptor.entries.is_empty() || descriptor.entries.len() > MAX_ENTRIES {
            return Err(InvalidArgument::new(
                "entries",
                format!(
                    "send 1 to {MAX_ENTRIES} entries, not {}",
                    descriptor.entries.len()
                ),
            ));
        }
        for (j, (key, _)) in descriptor.entries.iter().enumerate() {
            check_text("key", key).map_err(|e| e.at("entries", j))?;
        }
        let matched = match self.limits.find(domain, &descriptor.entries) {
            Match::Limited(rule) => Some(rule),
            Match::Unlimited if descriptor.limit_override.is_none() => {
                return Ok(Plan::Unlimited);
            }
            Match::None | Match::Unlimited => None,
        };
        let rule = match descriptor.limit_override {
            // An override in a unit meterd does not know is left out.
            None | Some((_, None)) => matched.cloned(),
            Some((0, Some(_))) => return Ok(Plan::Blocked(matched.cloned())),
            Some((requests, Some(unit))) => {
                let algorithm = matched.map_or(Algorithm::SlidingWindow, |r| r.limit.algorithm());
                let limit = Limit::new(requests, unit.duration(), algorithm)
                    .map_err(|problem| InvalidArgument::new("limit.requests_per_unit", problem))?;
                Some(match matched {
                    Some(rule) => Rule {
                        limit,
                        unit: Some(unit),
                        ..rule.clone()
                    },
                    None => Rule {
                        limit,
                        name: "override".to_owned(),
                        shadow: false,
                        fail: FailMode::Closed,
                        unit: Some(unit),
                    },
                })
            }
        };
        let Some(rule) = rule else {
            return Ok(Plan::Unmatched);
        };
        // A set descriptor hits_addend of 0 looks without counting; more
        // than the limit is refused whatever it is (capped, so no
        // arithmetic ever overflows).
        let cost = descriptor
            .hits_addend
            .unwrap_or(hits_addend.max(1))
            .min(rule.limit.requests() + 1);
        Ok(Plan::Check {
            key: envoy_key(domain, &descriptor.entries),
            rule,
            cost,
        })
    }

    /// The status of a descriptor blocked by an override of 0 requests
    /// (OK but reported in shadow mode), counted as refused.
    fn blocked(&self, rule: Option<Rule>) -> DescriptorVerdict {
        let shadow = rule.as_ref().is_some_and(|r| r.shadow);
        let counter = if shadow {
            &self.counters.shadow_denied
        } else {
            &self.counters.denied
        };
        counter.fetch_add(1, Ordering::Relaxed);
        DescriptorVerdict {
            code: if shadow {
                VerdictCode::Ok
            } else {
                VerdictCode::OverLimit
            },
            rule,
            remaining: 0,
            reset_after: Duration::ZERO,
            retry_after: Duration::ZERO,
            shadow_denied: shadow,
        }
    }

    fn count(&self, rule: &Rule, allowed: bool) {
        let counter = match (allowed, rule.shadow) {
            (true, _) => &self.counters.allowed,
            (false, true) => {
                tracing::debug!(limit = %rule.name, "shadow mode: would have refused");
                &self.counters.shadow_denied
            }
            (false, false) => &self.counters.denied,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an admission failing open and warns, at most once a second.
    fn failed_open(&self, error: &StoreError) {
        let total = self.counters.failed_open.fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.started.elapsed().as_secs() + 1;
        let last = self.warned.load(Ordering::Relaxed);
        if now > last
            && self
                .warned
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(%error, failed_open_total = total, "rate limit store unreachable: admitting unchecked (fail open)");
        }
    }
}

/// What a ShouldRateLimit descriptor comes to.
enum Plan {
    /// No limit matched.
    Unmatched,
    /// A descriptor marked unlimited.
    Unlimited,
    /// An override of 0 requests: over the limit without counting (the
    /// matched rule, if any, says whether in shadow mode).
    Blocked(Option<Rule>),
    /// A limit to check.
    Check {
        /// The limit.
        rule: Rule,
        /// The descriptor's key.
        key: String,
        /// Units taken (0: look only), at most the limit + 1.
        cost: u64,
    },
}

impl Plan {
    /// Whether the request may be admitted with this descriptor unchecked
    /// when the store cannot be reached: a limit that fails open, or one in
    /// shadow mode (it never refuses).
    fn fails_open(&self) -> bool {
        match self {
            Self::Unmatched | Self::Unlimited => true,
            // A shadow limit never refuses; an enforced block is answered
            // OVER_LIMIT without the store.
            Self::Blocked(rule) => rule.as_ref().is_some_and(|r| r.shadow),
            Self::Check { rule, .. } => rule.fail == FailMode::Open || rule.shadow,
        }
    }

    fn into_rule(self) -> Option<Rule> {
        match self {
            Self::Check { rule, .. } => Some(rule),
            Self::Blocked(rule) => rule,
            Self::Unmatched | Self::Unlimited => None,
        }
    }
}

impl DescriptorVerdict {
    /// OK, with `remaining` and nothing to wait for.
    fn ok(rule: Option<Rule>, remaining: u64) -> Self {
        Self {
            code: VerdictCode::Ok,
            rule,
            remaining,
            reset_after: Duration::ZERO,
            retry_after: Duration::ZERO,
            shadow_denied: false,
        }
    }
}

/// The one outcome of a one-check call.
fn one(outcomes: Vec<Outcome>) -> Result<Outcome, StoreError> {
    outcomes
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::Protocol("no rate limit outcome".into()))
}

/// Whether `error` means the store could not be reached (the cases a limit may fail open on).
fn is_unreachable(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::Unavailable(_) | StoreError::OutcomeUnknown(_) | StoreError::Overloaded(_)
    )
}

fn check_text(field: &'static str, text: &str) -> Result<(), InvalidArgument> {
    if text.is_empty() || text.len() > MAX_NAME || text.chars().any(char::is_control) {
        return Err(InvalidArgument::new(
            field,
            format!("must be 1 to {MAX_NAME} bytes without control characters"),
        ));
    }
    Ok(())
}

/// At most 64 characters of `text`, for messages.
fn truncated(text: &str) -> String {
    text.chars().take(64).collect()
}

/// The key of a descriptor: its domain and entries, each part escaped so
/// that no two descriptors share a key (`%`, `:`, `=`, `{`, `}`, `#` as
/// `%XX`); a value longer than 256 bytes or with control characters as
/// `#` and its SHA-256.
pub fn envoy_key(domain: &str, entries: &[(String, String)]) -> String {
    let mut key = String::with_capacity(
        3 + domain.len()
            + entries
                .iter()
                .map(|(k, v)| k.len() + v.len() + 2)
                .sum::<usize>(),
    );
    key.push_str("e:");
    escape_into(&mut key, domain);
    for (k, v) in entries {
        key.push(':');
        escape_into(&mut key, k);
        key.push('=');
        if v.len() > MAX_NAME || v.chars().any(char::is_control) {
            // A long or odd value (a long path, a header with a tab) is
            // counted under its digest: never a refused call, which a
            // proxy failing open would let through unchecked.
            key.push('#');
            key.push_str(&digest(v));
        } else {
            escape_into(&mut key, v);
        }
    }
    key
}

/// The SHA-256 of `text`, as 64 hex digits.
fn digest(text: &str) -> String {
    let hash = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    hash.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '%' | ':' | '=' | '{' | '}' | '#' => {
                out.push('%');
                out.push_str(&format!("{:02X}", c as u32));
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_keys_never_collide_whatever_the_values_hold() {
        let a = envoy_key("d", &[("a".into(), "b:c=d".into())]);
        let b = envoy_key("d", &[("a".into(), "b".into()), ("c".into(), "d".into())]);
        assert_ne!(a, b);
        assert_eq!(a, "e:d:a=b%3Ac%3Dd");
        assert_eq!(
            envoy_key("{x}", &[("k".into(), "%".into())]),
            "e:%7Bx%7D:k=%25"
        );
        let long = "x".repeat(300);
        let hashed = envoy_key("d", &[("path".into(), long.clone())]);
        assert_eq!(hashed.len(), "e:d:path=#".len() + 64, "{hashed}");
        assert_ne!(
            hashed,
            envoy_key("d", &[("path".into(), format!("{long}y"))])
        );
        assert_ne!(
            envoy_key("d", &[("path".into(), "a\tb".into())]),
            envoy_key("d", &[("path".into(), "a b".into())]),
        );
        assert_eq!(envoy_key("d", &[("k".into(), "#x".into())]), "e:d:k=%23x");
    }
}
