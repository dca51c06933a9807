//! The limits file (`--limits`, TOML): named policies for
//! `meter.v1.RateLimitService.CheckRateLimit`, and Envoy domains whose
//! descriptor trees `ShouldRateLimit` matches requests against.
//!
//! Checked whole when meterd starts: a mistake stops meterd with the file,
//! the line and the problem, never a limit silently missing at run time.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
};

use serde::Deserialize;
use toml::Spanned;

use crate::{Algorithm, FailMode, Limit, Rule, Unit};

/// The longest key, value, domain or policy name: 256 bytes.
pub const MAX_NAME: usize = 256;

/// Policies and Envoy domains, checked.
#[derive(Clone, Debug, Default)]
pub struct LimitsConfig {
    policies: HashMap<String, Rule>,
    domains: HashMap<String, Tree>,
}

/// The descriptors of one level of a domain, by key, then value.
#[derive(Clone, Debug, Default)]
struct Tree {
    keys: HashMap<String, KeyNodes>,
}

/// The descriptors of one key: by exact value, by value prefix (`/api/*`,
/// longest first), and the one for any value.
#[derive(Clone, Debug, Default)]
struct KeyNodes {
    values: HashMap<String, Node>,
    prefixes: Vec<(String, Node)>,
    any: Option<Node>,
}

/// One descriptor: its limit (if any) and the descriptors nested in it.
#[derive(Clone, Debug, Default)]
struct Node {
    rule: Option<Rule>,
    unlimited: bool,
    children: Tree,
}

/// What a descriptor matched in the limits file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Match<'a> {
    /// No limit: the descriptor is not limited.
    None,
    /// A descriptor marked `unlimited = true`: never limited.
    Unlimited,
    /// A limit.
    Limited(&'a Rule),
}

/// Why a limits file was refused: the file and, where known, the line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitsError {
    /// The file the limits came from.
    pub origin: String,
    /// What is wrong, with its line.
    pub message: String,
}

impl fmt::Display for LimitsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "limits file {}: {}",
            self.origin,
            self.message.trim_end()
        )
    }
}

impl std::error::Error for LimitsError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    #[serde(default)]
    policies: BTreeMap<String, Spanned<PolicyFields>>,
    #[serde(default)]
    domains: Vec<Spanned<DomainFields>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFields {
    limit: u64,
    window: String,
    #[serde(default)]
    algorithm: Algorithm,
    #[serde(default)]
    shadow: bool,
    #[serde(default)]
    fail: FailMode,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DomainFields {
    domain: String,
    #[serde(default)]
    descriptors: Vec<Spanned<DescriptorFields>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DescriptorFields {
    key: String,
    value: Option<String>,
    rate_limit: Option<RateLimitFields>,
    #[serde(default)]
    unlimited: bool,
    #[serde(default)]
    shadow_mode: bool,
    #[serde(default)]
    fail: FailMode,
    #[serde(default)]
    descriptors: Vec<Spanned<DescriptorFields>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitFields {
    requests_per_unit: u64,
    unit: Unit,
    #[serde(default)]
    algorithm: Algorithm,
    name: Option<String>,
}

/// Builds the checked config from the parsed file, naming lines from `text`.
struct Builder<'a> {
    text: &'a str,
}

impl Builder<'_> {
    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn at<T>(&self, spanned: &Spanned<T>, problem: impl fmt::Display) -> String {
        format!("line {}: {problem}", self.line(spanned.span().start))
    }

    fn policy(&self, name: &str, fields: &Spanned<PolicyFields>) -> Result<Rule, String> {
        check_name("policy name", name).map_err(|p| self.at(fields, p))?;
        let policy = fields.get_ref();
        let window = meter_core::time::parse_duration(&policy.window)
            .map_err(|p| self.at(fields, format!("policies.{name}.window: {p}")))?;
        let limit = Limit::new(policy.limit, window, policy.algorithm)
            .map_err(|p| self.at(fields, format!("policies.{name}: {p}")))?;
        Ok(Rule {
            limit,
            name: name.to_owned(),
            shadow: policy.shadow,
            fail: policy.fail,
            unit: None,
        })
    }

    fn tree(&self, path: &str, descriptors: &[Spanned<DescriptorFields>]) -> Result<Tree, String> {
        let mut tree = Tree::default();
        for spanned in descriptors {
            let fields = spanned.get_ref();
            check_name("key", &fields.key).map_err(|p| self.at(spanned, p))?;
            if let Some(value) = &fields.value {
                check_name("value", value).map_err(|p| self.at(spanned, p))?;
            }
            let here = match &fields.value {
                Some(value) => format!("{path}/{}={value}", fields.key),
                None => format!("{path}/{}", fields.key),
            };
            if fields.unlimited && fields.rate_limit.is_some() {
                return Err(self.at(
                    spanned,
                    format!("{here}: both unlimited and a rate_limit; keep one"),
                ));
            }
            if !fields.unlimited && fields.rate_limit.is_none() && fields.descriptors.is_empty() {
                return Err(self.at(
                    spanned,
                    format!("{here}: no rate_limit, no unlimited = true and no nested descriptors: it limits nothing"),
                ));
            }
            let rule = match &fields.rate_limit {
                None => None,
                Some(rate) => {
                    if rate.requests_per_unit == 0 {
                        return Err(self.at(
                            spanned,
                            format!("{here}: requests_per_unit is 0; a limit admits at least 1 (unlimited = true admits everything)"),
                        ));
                    }
                    let limit =
                        Limit::new(rate.requests_per_unit, rate.unit.duration(), rate.algorithm)
                            .map_err(|p| self.at(spanned, format!("{here}: {p}")))?;
                    Some(Rule {
                        limit,
                        name: rate.name.clone().unwrap_or_else(|| here.clone()),
                        shadow: fields.shadow_mode,
                        fail: fields.fail,
                        unit: Some(rate.unit),
                    })
                }
            };
            let node = Node {
                rule,
                unlimited: fields.unlimited,
                children: self.tree(&here, &fields.descriptors)?,
            };
            let nodes = tree.keys.entry(fields.key.clone()).or_default();
            let prefix = fields.value.as_deref().and_then(|v| v.strip_suffix('*'));
            let taken = match (&fields.value, prefix) {
                (_, Some(prefix)) => nodes.prefixes.iter().any(|(p, _)| p == prefix),
                (Some(value), None) => nodes.values.contains_key(value),
                (None, None) => nodes.any.is_some(),
            };
            if taken {
                return Err(self.at(spanned, format!("{here} is declared twice at this level")));
            }
            match (&fields.value, prefix) {
                (_, Some(prefix)) => {
                    nodes.prefixes.push((prefix.to_owned(), node));
                    nodes
                        .prefixes
                        .sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
                }
                (Some(value), None) => {
                    nodes.values.insert(value.clone(), node);
                }
                (None, None) => nodes.any = Some(node),
            }
        }
        Ok(tree)
    }
}

fn check_name(what: &str, text: &str) -> Result<(), String> {
    if text.is_empty() || text.len() > MAX_NAME || text.chars().any(char::is_control) {
        return Err(format!(
            "{what} {text:?} must be 1-{MAX_NAME} bytes without control characters"
        ));
    }
    Ok(())
}

impl LimitsConfig {
    /// No policies and no domains: every Envoy descriptor is unlimited.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Parses and checks a limits file read from `origin`.
    pub fn from_toml(origin: &str, text: &str) -> Result<Self, LimitsError> {
        let error = |message: String| LimitsError {
            origin: origin.to_owned(),
            message,
        };
        let file: LimitsFile = toml::from_str(text).map_err(|e| error(e.to_string()))?;
        let builder = Builder { text };
        let mut config = Self::default();
        for (name, fields) in &file.policies {
            let rule = builder.policy(name, fields).map_err(error)?;
            config.policies.insert(name.clone(), rule);
        }
        for spanned in &file.domains {
            let domain = &spanned.get_ref().domain;
            check_name("domain", domain).map_err(|p| error(builder.at(spanned, p)))?;
            if config.domains.contains_key(domain) {
                return Err(error(
                    builder.at(spanned, format!("domain {domain:?} is declared twice")),
                ));
            }
            let tree = builder
                .tree(domain, &spanned.get_ref().descriptors)
                .map_err(error)?;
            config.domains.insert(domain.clone(), tree);
        }
        Ok(config)
    }

    /// The policy named `name`.
    pub fn policy(&self, name: &str) -> Option<&Rule> {
        self.policies.get(name)
    }

    /// The policies' names, sorted.
    pub fn policy_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.policies.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Whether `domain` is declared.
    pub fn has_domain(&self, domain: &str) -> bool {
        self.domains.contains_key(domain)
    }

    /// The limit of a descriptor of `domain`, as Envoy's reference service
    /// matches it: each entry in turn, the descriptor with its key and exact
    /// value first, else the longest value prefix (`value = "/api/*"`), else
    /// the one with its key and no value (any value); the limit is the one
    /// of the descriptor the last entry reaches.
    pub fn find<'a, K, V>(&self, domain: &str, entries: &'a [(K, V)]) -> Match<'_>
    where
        K: AsRef<str> + 'a,
        V: AsRef<str> + 'a,
    {
        let Some(mut tree) = self.domains.get(domain) else {
            return Match::None;
        };
        for (i, (key, value)) in entries.iter().enumerate() {
            let Some(nodes) = tree.keys.get(key.as_ref()) else {
                return Match::None;
            };
            let value = value.as_ref();
            let node = nodes
                .values
                .get(value)
                .or_else(|| {
                    nodes
                        .prefixes
                        .iter()
                        .find(|(prefix, _)| value.starts_with(prefix.as_str()))
                        .map(|(_, node)| node)
                })
                .or(nodes.any.as_ref());
            let Some(node) = node else {
                return Match::None;
            };
            if i + 1 == entries.len() {
                return match (&node.rule, node.unlimited) {
                    (_, true) => Match::Unlimited,
                    (Some(rule), false) => Match::Limited(rule),
                    (None, false) => Match::None,
                };
            }
            tree = &node.children;
        }
        Match::None
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const EXAMPLE: &str = r#"
[policies.api]
limit = 100
window = "60s"

[policies.login]
limit = 5
window = "15m"
algorithm = "token_bucket"
shadow = true
fail = "open"

[[domains]]
domain = "edge"

[[domains.descriptors]]
key = "remote_address"
rate_limit = { requests_per_unit = 100, unit = "minute" }

[[domains.descriptors]]
key = "tenant"
value = "internal"
unlimited = true

[[domains.descriptors]]
key = "tenant"
rate_limit = { requests_per_unit = 10, unit = "second", algorithm = "fixed_window" }

[[domains.descriptors.descriptors]]
key = "path"
value = "/search"
shadow_mode = true
rate_limit = { requests_per_unit = 2, unit = "second", name = "search" }

[[domains.descriptors.descriptors]]
key = "path"
value = "/api/*"
rate_limit = { requests_per_unit = 3, unit = "second" }

[[domains.descriptors.descriptors]]
key = "path"
value = "/api/admin/*"
rate_limit = { requests_per_unit = 1, unit = "second" }
"#;

    fn example() -> LimitsConfig {
        LimitsConfig::from_toml("example.toml", EXAMPLE).expect("valid")
    }

    fn rule<'a>(found: Match<'a>) -> &'a Rule {
        match found {
            Match::Limited(rule) => rule,
            other => panic!("no limit: {other:?}"),
        }
    }

    #[test]
    fn policies_carry_their_limit_algorithm_shadow_and_fail_modes() {
        let config = example();
        let login = config.policy("login").expect("declared");
        assert_eq!(login.limit.requests(), 5);
        assert_eq!(login.limit.window(), Duration::from_secs(900));
        assert_eq!(login.limit.algorithm(), Algorithm::TokenBucket);
        assert!(login.shadow);
        assert_eq!(login.fail, FailMode::Open);
        let api = config.policy("api").expect("declared");
        assert_eq!(
            (api.limit.algorithm(), api.shadow, api.fail),
            (Algorithm::SlidingWindow, false, FailMode::Closed)
        );
        assert_eq!(config.policy_names(), ["api", "login"]);
    }

    #[test]
    fn descriptors_match_exact_values_first_then_any_value_then_nested() {
        let config = example();
        let ip = rule(config.find("edge", &[("remote_address", "10.0.0.1")]));
        assert_eq!((ip.limit.requests(), ip.unit), (100, Some(Unit::Minute)));
        assert_eq!(ip.name, "edge/remote_address");
        assert_eq!(
            config.find("edge", &[("tenant", "internal")]),
            Match::Unlimited
        );
        let tenant = rule(config.find("edge", &[("tenant", "acme")]));
        assert_eq!(tenant.limit.algorithm(), Algorithm::FixedWindow);
        let search = rule(config.find("edge", &[("tenant", "acme"), ("path", "/search")]));
        assert_eq!((search.name.as_str(), search.shadow), ("search", true));
        // The exact value wins, and has no nested /search.
        assert_eq!(
            config.find("edge", &[("tenant", "internal"), ("path", "/search")]),
            Match::None
        );
        assert_eq!(
            config.find("edge", &[("tenant", "acme"), ("path", "/other")]),
            Match::None
        );
        let api = rule(config.find("edge", &[("tenant", "acme"), ("path", "/api/users")]));
        assert_eq!(api.limit.requests(), 3);
        let admin = rule(config.find("edge", &[("tenant", "acme"), ("path", "/api/admin/x")]));
        assert_eq!(admin.limit.requests(), 1, "the longest prefix wins");
        assert_eq!(config.find("edge", &[("user", "1")]), Match::None);
        assert_eq!(
            config.find("other", &[("remote_address", "1")]),
            Match::None
        );
        let no_entries: [(&str, &str); 0] = [];
        assert_eq!(config.find("edge", &no_entries), Match::None);
    }

    fn refusal(text: &str) -> String {
        LimitsConfig::from_toml("limits.toml", text)
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn mistakes_name_the_file_the_line_and_the_problem() {
        let unknown_unit = refusal(
            "[[domains]]\ndomain = \"edge\"\n[[domains.descriptors]]\nkey = \"ip\"\nrate_limit = { requests_per_unit = 1, unit = \"fortnight\" }\n",
        );
        assert!(
            unknown_unit.contains("limits.toml")
                && unknown_unit.contains("line 5")
                && unknown_unit.contains("fortnight"),
            "{unknown_unit}"
        );
        let zero = refusal(
            "[[domains]]\ndomain = \"edge\"\n\n[[domains.descriptors]]\nkey = \"ip\"\nrate_limit = { requests_per_unit = 0, unit = \"second\" }\n",
        );
        assert!(
            zero.contains("line 4") && zero.contains("requests_per_unit is 0"),
            "{zero}"
        );
        let duplicate = refusal(
            "[[domains]]\ndomain = \"edge\"\n[[domains.descriptors]]\nkey = \"ip\"\nrate_limit = { requests_per_unit = 1, unit = \"second\" }\n[[domains.descriptors]]\nkey = \"ip\"\nrate_limit = { requests_per_unit = 2, unit = \"second\" }\n",
        );
        assert!(
            duplicate.contains("line 6") && duplicate.contains("declared twice"),
            "{duplicate}"
        );
        let domain_twice = refusal("[[domains]]\ndomain = \"a\"\n[[domains]]\ndomain = \"a\"\n");
        assert!(
            domain_twice.contains("line 3") && domain_twice.contains("declared twice"),
            "{domain_twice}"
        );
        let zero_policy = refusal("[policies.api]\nlimit = 0\nwindow = \"1m\"\n");
        assert!(
            zero_policy.contains("line 1") && zero_policy.contains("must be from 1"),
            "{zero_policy}"
        );
        let bad_window = refusal("[policies.api]\nlimit = 5\nwindow = \"1 minute\"\n");
        assert!(bad_window.contains("window"), "{bad_window}");
        let typo =
            refusal("[policies.api]\nlimit = 5\nwindow = \"1m\"\nalgoritm = \"fixed_window\"\n");
        assert!(
            typo.contains("line 4") && typo.contains("algoritm"),
            "{typo}"
        );
        let useless =
            refusal("[[domains]]\ndomain = \"edge\"\n[[domains.descriptors]]\nkey = \"ip\"\n");
        assert!(useless.contains("limits nothing"), "{useless}");
    }

    #[test]
    fn the_example_in_deploy_is_valid() {
        let text = include_str!("../../../deploy/limits.toml");
        let config = LimitsConfig::from_toml("deploy/limits.toml", text).expect("valid");
        assert!(!config.policy_names().is_empty());
    }
}
